"""MediaPipe Face Mesh's landmark model (``face_landmark.tflite``) as an edgefa predictor, so the
mobile product users compare against is scored on the same AFLW2000-3D protocol as edgefa's models:
``edgefa eval --model mediapipe-face:face_landmark.tflite --data aflw2000-3d``.

It gets the same uint8 BGR 120x120 protocol crops every edgefa model gets. MediaPipe's own pipeline
crops differently: it takes BlazeFace's box (or the previous frame's landmark box), enlarges it 1.5x,
squares and rotates it upright, and resizes that to 192x192 RGB in [0, 1]. Here a centred square of
``framing`` times the crop's side is resized to 192x192 (chosen on aflw-train by ``python -m
edgefa.training.mediapipe_correspondence`` among 0.8-1.45 and stored with the mapping: 1.15, i.e. the crop
padded by repeating its edge pixels, as the protocol crop frames the face tighter than MediaPipe's
1.5x box); no rotation is applied, as for every edgefa model.

Outputs: 468 points (x, y in input pixels, z relative depth at roughly x's scale) -> 68 iBUG points
by a sparse convex combination of mesh vertices per point (``mediapipe_68.json``, learned on
aflw-train's refined labels, never on AFLW2000-3D), one set per bin of MediaPipe's own yaw. Caveat:
3DDFA's jaw points (0-16) follow the visible silhouette when the head turns, MediaPipe's face-oval
vertices are fixed on the skin, so no fixed combination matches both at large yaw; the yaw bins
recover part of that (hard bins: a point can jump where a face crosses an edge). z is MediaPipe's depth (sign and scale fitted to 3DDFA's
z on aflw-train), centred on its own origin, not 3DDFA's. Yaw/pitch/roll: a similarity (Procrustes) fit
of the 468 points to a canonical mesh (MediaPipe's own predictions on aflw-train, each de-rotated by
its refined label's pose and averaged), read in the AFLW2000-3D ``Pose_Para`` convention of
``edgefa.facemodel.geometry.rotation_to_euler`` (the one implementation, numpy in, numpy out). Torch-free: numpy, OpenCV and LiteRT only.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edgefa.errors import EdgefaError
from edgefa.facemodel.geometry import rotation_to_euler
from edgefa.runtime.predictor import Predictor

INPUT_SIZE = 192
N_VERTICES = 468
CROP_SIZE = 120  # the protocol crop the 68 points are given in (pixels)
MAPPING_FORMAT = "edgefa-mediapipe-68/1"
DEFAULT_MAPPING = Path(__file__).with_name("mediapipe_68.json")


class FaceMeshModel:
    """The raw model: crops in, 468 points in crop pixels out (no mapping)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from edgefa.runtime.tflite import interpreter

        path = Path(path)
        if not path.is_file():
            raise EdgefaError(f"{path}: MediaPipe face_landmark.tflite not found")
        try:
            self.interpreter = interpreter(str(path), threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError / RuntimeError with multi-line text
            raise EdgefaError(f"{path}: not a loadable TFLite model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
        inp = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        sizes = sorted(int(np.prod(o["shape"])) for o in outs)
        if len(inp) != 1 or list(inp[0]["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3] or sizes != [1, 3 * N_VERTICES]:
            raise EdgefaError(f"{path}: not MediaPipe's face landmark model (expected input 1x192x192x3, "
                              f"outputs 1404 + 1; got {[list(i['shape']) for i in inp]} -> {sizes})")
        self.input_index = inp[0]["index"]
        self.mesh_index = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 3 * N_VERTICES)
        self.score_index = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)

    def run(self, images: np.ndarray, framing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR (B, S, S, 3) -> points (B, 468, 3) in pixels of a 120 crop, face scores (B,) in [0, 1].

        ``framing``: side of the centred square fed to the model, as a fraction of the crop's (> 1: padded)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise EdgefaError(f"expected square BGR crops (B, S, S, 3), got shape {images.shape}")
        size = images.shape[1]
        side = size * float(framing)
        x0 = (size - side) / 2
        # crop and resize in one affine warp (sub-pixel sub-squares, same pixel-centre convention as cv2.resize)
        k = INPUT_SIZE / side
        warp = np.float32([[k, 0, (0.5 - x0) * k - 0.5], [0, k, (0.5 - x0) * k - 0.5]])
        mesh = np.empty((len(images), N_VERTICES, 3), np.float32)
        scores = np.empty(len(images), np.float32)
        for i, image in enumerate(images):
            x = cv2.warpAffine(np.ascontiguousarray(image), warp, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            mesh[i] = self.interpreter.get_tensor(self.mesh_index).reshape(N_VERTICES, 3)
            scores[i] = self.interpreter.get_tensor(self.score_index).reshape(())
        mesh[..., :2] = (mesh[..., :2] + 0.5) / k - 0.5 + x0  # input pixels -> crop pixels (pixel centres)
        mesh[..., 2] /= k
        mesh *= CROP_SIZE / size
        return mesh, 1.0 / (1.0 + np.exp(-scores))


def _combinations(points: list, where: str) -> tuple[np.ndarray, np.ndarray]:
    """68 {vertices, weights} entries -> index, weight arrays (68, K), zero-padded."""
    if len(points) != 68:
        raise ValueError(f"{where}: {len(points)} points, expected 68")
    width = max(len(p["vertices"]) for p in points)
    index = np.zeros((68, width), np.int64)
    weight = np.zeros((68, width), np.float64)
    for i, p in enumerate(points):
        index[i, :len(p["vertices"])] = p["vertices"]
        weight[i, :len(p["weights"])] = p["weights"]
    if index.min() < 0 or index.max() >= N_VERTICES:
        raise ValueError(f"{where}: vertex index out of 0..{N_VERTICES - 1}")
    return index, weight


def load_mapping(path: str | Path = DEFAULT_MAPPING) -> dict:
    """The 468 -> 68 correspondence file as arrays; one-line errors.

    ``points``: one combination per 68 point for any pose; ``by_yaw`` (optional): one set per bin of
    MediaPipe's own yaw (``edges`` in degrees), which follows 3DDFA's silhouette contour better."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != MAPPING_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {MAPPING_FORMAT!r}")
        index, weight = _combinations(data["points"], "points")
        canonical = np.asarray(data["canonical"], np.float64)
        if canonical.shape != (N_VERTICES, 3):
            raise ValueError(f"canonical mesh has shape {canonical.shape}, expected ({N_VERTICES}, 3)")
        out = {"index": index, "weight": weight, "canonical": canonical, "framing": float(data["framing"]),
               "z_scale": float(data["z_scale"]), "offset": np.asarray(data["offset"], np.float64)}
        if "by_yaw" in data:
            edges = [float(e) for e in data["by_yaw"]["edges"]]
            bins = data["by_yaw"]["points"]
            if len(bins) != len(edges) + 1 or edges != sorted(edges):
                raise ValueError("by_yaw: needs sorted edges and one point set more than edges")
            out["yaw_edges"] = np.asarray(edges)
            out["yaw_bins"] = [_combinations(b, f"by_yaw bin {i}") for i, b in enumerate(bins)]
        return out
    except FileNotFoundError:
        raise EdgefaError(f"{path}: MediaPipe 468 -> 68 mapping not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgefaError(f"{path}: not a MediaPipe 68-point mapping ({exc})") from None


def map_to_68(mesh: np.ndarray, mapping: dict, combination: tuple | None = None) -> np.ndarray:
    """(B, 468, 3) -> (B, 68, 3): each point a weighted sum of its vertices (``combination``: an
    (index, weight) pair, default the any-pose one), plus the fitted xy offset and z scale."""
    index, weight = combination or (mapping["index"], mapping["weight"])
    pts = np.einsum("bpkc,pk->bpc", mesh[:, index].astype(np.float64), weight)
    pts[..., :2] += mapping["offset"]
    pts[..., 2] *= mapping["z_scale"]
    return pts


def mesh_pose(mesh: np.ndarray, mapping: dict) -> np.ndarray:
    """Yaw, pitch, roll (B, 3) in degrees: Procrustes of the 468 points to the canonical mesh."""
    return rotation_to_euler(similarity_rotation(mapping["canonical"], pose_space(mesh, mapping["z_scale"])))


def mesh_to_68(mesh: np.ndarray, mapping: dict, by_yaw: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """68 points (B, 68, 3) and pose (B, 3); with ``by_yaw`` each face uses its yaw bin's combinations."""
    pose = mesh_pose(mesh, mapping)
    if not by_yaw or "yaw_bins" not in mapping:
        return map_to_68(mesh, mapping), pose
    pts = np.empty((len(mesh), 68, 3))
    which = np.searchsorted(mapping["yaw_edges"], pose[:, 0])
    for b, combination in enumerate(mapping["yaw_bins"]):
        sel = which == b
        if sel.any():
            pts[sel] = map_to_68(mesh[sel], mapping, combination)
    return pts, pose


def pose_space(points: np.ndarray, z_scale: float) -> np.ndarray:
    """Crop pixels (x right, y down, MediaPipe z) -> 3DDFA's space before projection (y up, z to the
    viewer), where ``v = s R X + t`` holds: the inverse of ``geometry.project_to_crop``."""
    return np.stack([points[..., 0] + 1, CROP_SIZE - points[..., 1], points[..., 2] * z_scale], axis=-1)


def similarity_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R (B, 3, 3) of the least-squares fit dst ~ s R src + t (Umeyama; proper, det +1).
    src (N, 3), dst (B, N, 3)."""
    a = src - src.mean(0)
    b = dst - dst.mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("nj,bni->bij", a, b))  # cov[i, j] = sum b_i a_j
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(dst), 3))
    fix[:, 2] = d
    return (u * fix[:, None, :]) @ vt


class MediaPipeFacePredictor(Predictor):
    """``predict_geometry`` gives 68 points (B, 68, 3) in 120-crop pixels and yaw/pitch/roll (B, 3) in
    degrees. There are no 3DMM parameters, so ``predict`` is an error."""

    face_model = None
    crop_size = CROP_SIZE

    def __init__(self, path: str | Path, mapping: str | Path | None = None, threads: int | None = None,
                 by_yaw: bool = True):
        self.model = FaceMeshModel(path, threads)
        self.mapping = load_mapping(mapping or DEFAULT_MAPPING)
        self.by_yaw = by_yaw  # False: one combination per point for every pose (for comparison)
        self.name = f"mediapipe-face ({Path(path).name})"

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise EdgefaError("mediapipe-face has no 3DMM parameters: use its landmarks and pose")

    def predict_geometry(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mesh, _ = self.model.run(images, self.mapping["framing"])
        pts, pose = mesh_to_68(mesh, self.mapping, self.by_yaw)
        return pts.astype(np.float32), pose.astype(np.float32)

    def predict_all(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pts, pose = self.predict_geometry(images)
        return np.full((len(images), 62), np.nan, np.float32), pts, pose
