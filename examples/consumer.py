"""The app side of an edgefa device file, with nothing but numpy, OpenCV and LiteRT (or onnxruntime):
detect -> crop -> run -> map back. Deliberately standalone (no edgefa import) as the reference to port
to Kotlin / Swift; tests/test_consumer.py checks it against edgefa's own FaceAligner.

    python examples/consumer.py --model mobilenetv3-small-int8.tflite \
        --detector face_detection_short_range.tflite photo.jpg

Needs a file exported with ``--postprocess`` (uint8 crop in; landmarks, pose, params out). The crop
rule and the input layout are read from the file's own metadata (``edgefa.crop``, ``edgefa.input``).
"""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np


def tflite_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def tflite_metadata(path) -> dict:
    from ai_edge_litert import schema_py_generated as schema  # the flatbuffer schema ships with LiteRT

    content = open(path, "rb").read()
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == b"edgefa":
            buf = model.Buffers(entry.Buffer())
            data = content[buf.Offset():buf.Offset() + buf.Size()] if buf.Offset() > 1 else buf.DataAsNumpy().tobytes()
            return json.loads(data)
    raise SystemExit(f"{path}: no edgefa metadata")


class FaceModel:
    """The edgefa file: uint8 crop (NHWC) in, {landmarks (68, 3) crop px, pose (3,) deg, params} out."""

    def __init__(self, path: str):
        if path.endswith(".onnx"):
            import onnxruntime as ort

            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            meta = self.session.get_modelmeta().custom_metadata_map
            self.run = lambda x: dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, {"input": x})))
        else:
            interpreter = tflite_interpreter(path)
            runner = interpreter.get_signature_runner()
            meta = tflite_metadata(path)
            self.run = lambda x: runner(input=x)
        self.input = json.loads(meta["edgefa.input"])
        self.crop = json.loads(meta["edgefa.crop"])
        if meta.get("edgefa.postprocess") != "true" or self.input["dtype"] != "uint8":
            raise SystemExit(f"{path}: export it with --postprocess (landmarks and pose out of the graph)")

    def __call__(self, crop_bgr: np.ndarray) -> dict:
        h, w = self.input["size"]
        x = cv2.resize(crop_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        if self.input["color"] == "RGB":
            x = x[:, :, ::-1]
        out = self.run(np.ascontiguousarray(x[None]))
        return {k: np.asarray(v, np.float32)[0] for k, v in out.items()}


def blazeface(interpreter, image_bgr: np.ndarray, min_score=0.5) -> list[tuple[np.ndarray, float]]:
    """BlazeFace short-range: letterbox to 128, decode 896 SSD anchors, weighted NMS (IoU 0.3)."""
    h, w = image_bgr.shape[:2]
    scale = 128 / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    px, py = (128 - nw) // 2, (128 - nh) // 2
    canvas = np.zeros((128, 128, 3), np.uint8)
    canvas[py:py + nh, px:px + nw] = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    x = canvas[None, :, :, ::-1].astype(np.float32) / 127.5 - 1
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outs = {d["name"]: interpreter.get_tensor(d["index"])[0] for d in interpreter.get_output_details()}
    raw, logits = outs["regressors"], outs["classificators"][:, 0].astype(np.float64)
    anchors = []  # 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6 anchors (stride 16)
    for cells, per_cell in ((16, 2), (8, 6)):
        for y in range(cells):
            for x_ in range(cells):
                anchors += [((x_ + 0.5) / cells * 128, (y + 0.5) / cells * 128)] * per_cell
    anchors = np.array(anchors)
    scores = 1 / (1 + np.exp(-np.clip(logits, -100, 100)))
    keep = np.argsort(-scores)
    keep = keep[scores[keep] >= min_score]
    centre = raw[keep, :2] + anchors[keep]
    boxes = np.concatenate([centre - raw[keep, 2:4] / 2, centre + raw[keep, 2:4] / 2], axis=1)
    scores = scores[keep]
    faces, left = [], np.ones(len(keep), bool)
    for i in range(len(keep)):
        if not left[i]:
            continue
        b = boxes[i]
        inter = (np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None) *
                 np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None))
        union = (b[2] - b[0]) * (b[3] - b[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
        group = left & (inter / np.maximum(union, 1e-9) > 0.3)
        group[i] = True
        box = (boxes[group] * scores[group, None]).sum(0) / scores[group].sum()
        faces.append(((box.reshape(2, 2) - (px, py)) / scale, float(scores[i])))
        left &= ~group
    return [(b.reshape(4), s) for b, s in faces]


def crop_box(box, rule: dict) -> np.ndarray:
    x1, y1, x2, y2 = box
    size = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2 + rule["dx"] * size, (y1 + y2) / 2 + rule["dy"] * size
    half = rule["scale"] * size / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def cut(image: np.ndarray, box, size: int) -> np.ndarray:
    """The square ``box`` of the image (black outside it), resized to size x size."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    out = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    h, w = image.shape[:2]
    sx, sy, ex, ey = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if ex > sx and ey > sy:
        out[sy - y1:ey - y1, sx - x1:ex - x1] = image[sy:ey, sx:ex]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def align(model: FaceModel, detector, image_bgr: np.ndarray) -> list[dict]:
    size = model.crop["size"]
    faces = []
    for box, score in blazeface(detector, image_bgr):
        roi = crop_box(box, model.crop["from_detector"])
        for _ in range(2):  # first pass from the detector box, second from the first pass's landmarks
            out = model(cut(image_bgr, roi, size))
            k = (roi[2] - roi[0]) / size
            pts = out["landmarks"].copy()
            pts[:, 0], pts[:, 1], pts[:, 2] = roi[0] + pts[:, 0] * k, roi[1] + pts[:, 1] * k, pts[:, 2] * k
            roi = crop_box((*pts[:, :2].min(0), *pts[:, :2].max(0)), model.crop["from_landmarks"])
        yaw, pitch, roll = (float(v) for v in out["pose"])
        faces.append({"box": box.tolist(), "score": score, "landmarks": pts.tolist(),
                      "pose": {"yaw": yaw, "pitch": pitch, "roll": roll}})
    return faces


def main():
    ap = argparse.ArgumentParser(description="edgefa device file on a photo, without edgefa")
    ap.add_argument("--model", required=True, help="a --postprocess .tflite or .onnx file")
    ap.add_argument("--detector", required=True, help="face_detection_short_range.tflite (MediaPipe)")
    ap.add_argument("image")
    args = ap.parse_args()
    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"{args.image}: not a readable image")
    print(json.dumps(align(FaceModel(args.model), tflite_interpreter(args.detector), image)))


if __name__ == "__main__":
    main()
