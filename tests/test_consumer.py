"""examples/consumer.py (numpy + OpenCV + LiteRT / onnxruntime only) agrees with edgefa's FaceAligner."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "reports" / "models"


def load_consumer():
    spec = importlib.util.spec_from_file_location("consumer", ROOT / "examples" / "consumer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["mobilenetv3-small-int8.tflite", "mobilenetv3-small.onnx"])
def test_consumer_matches_face_aligner(model, aflw2000_root):
    pytest.importorskip("ai_edge_litert")
    from edgefa import FaceAligner
    from edgefa.data.images import read_image

    detector = shared_path("peers", "mediapipe_face", "face_detection_short_range.tflite")
    consumer = load_consumer()
    image = read_image(aflw2000_root / "AFLW2000" / "image00004.jpg")
    theirs = consumer.align(consumer.FaceModel(str(MODELS / model)), consumer.tflite_interpreter(str(detector)), image)
    ours = FaceAligner(str(MODELS / model), detector=f"blazeface:{detector}", threads=1)(image)
    assert len(theirs) == len(ours) == 1
    assert np.abs(np.asarray(theirs[0]["landmarks"]) - ours[0].landmarks).max() < 0.05
    assert np.allclose(list(theirs[0]["pose"].values()), ours[0].pose, atol=0.01)


def test_consumer_imports_no_edgefa_or_torch(aflw2000_root, tmp_path):
    pytest.importorskip("ai_edge_litert")
    detector = shared_path("peers", "mediapipe_face", "face_detection_short_range.tflite")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import runpy, sys\n"
        f"sys.argv = ['consumer.py', '--model', {str(MODELS / 'mobilenetv3-small-int8.tflite')!r}, "
        f"'--detector', {str(detector)!r}, {str(aflw2000_root / 'AFLW2000' / 'image00004.jpg')!r}]\n"
        f"runpy.run_path({str(ROOT / 'examples' / 'consumer.py')!r}, run_name='__main__')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('edgefa', 'torch')], 'imported edgefa or torch'\n")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"landmarks"' in out.stdout
