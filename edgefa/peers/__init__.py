"""Peer models that are not edgefa's own (other topologies, other runtimes), run behind the predictor
interface so ``edgefa eval`` scores them on the same protocol: ``mediapipe_face`` (MediaPipe Face Mesh)."""
