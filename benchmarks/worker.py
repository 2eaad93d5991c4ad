"""One bench job in its own process: load one model in one runtime, time it at each thread count,
then score it on the dataset.

A process per model keeps the runtimes' thread pools, memory peaks and crashes apart: a file that
kills its runtime fails its own row, not the matrix. Threads are pinned through each runtime's own
option (onnxruntime session options, LiteRT ``num_threads``, ``torch.set_num_threads``).

Internal: ``python -m edgefa.benchmarks.worker JOB.json`` prints one ``@@edgefa {json}`` line per event.
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from edgefa.benchmarks.cards import metadata_info
from edgefa.benchmarks.timing import latency_stats, peak_rss_mb, rss_mb, time_calls
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_bytes, file_size_mb

EVENT_PREFIX = "@@edgefa "
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0


def _parent_gone(parent_pid: int) -> bool:
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def die_with_parent(parent_pid: int | None) -> None:
    """A bench killed with ``kill -9`` cannot stop its worker, which would then run on for minutes,
    holding cores and memory. Linux: the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG;
    it fires when the thread that started us exits: bench starts workers from its main thread).
    Everywhere: a thread polls the parent id (macOS has no prctl). The parent may die before either
    is in place, so it is checked once right after."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # 9: SIGKILL
        except (OSError, AttributeError):
            pass  # no prctl (odd libc): the polling thread still covers it
    if not parent_pid:
        return
    if os.getppid() != parent_pid and _parent_gone(parent_pid):
        os._exit(1)  # the parent died before we could watch it
    started_under = os.getppid()  # the bench, or a launcher between us (Windows venv python)

    def watch():
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != started_under:  # re-parented: our parent is gone
                os._exit(1)
    threading.Thread(target=watch, name="edgefa-parent-watch", daemon=True).start()


def emit(event: str, **data) -> None:
    print(EVENT_PREFIX + json.dumps({"event": event, **data}, default=float), flush=True)


def latency_crops(data: str | None, batch: int) -> np.ndarray:
    """Real crops from the bench's dataset when it has one (the timing input matters little, but
    int8 kernels with saturating inputs can differ), else rendered synthetic faces."""
    from edgefa.data.registry import create_dataset

    spec = data or f"synthetic:seed=0,n={batch}"
    try:
        dataset = create_dataset(spec)
    except EdgefaError:
        dataset = create_dataset(f"synthetic:seed=0,n={batch}")  # the data error is reported by accuracy
    return np.stack([dataset[i % len(dataset)]["image"] for i in range(batch)])


# --- one class per kind of target: load(threads) -> callable timed; info(); predictor(threads) ---

class FileTarget:
    """An edgefa-exported .onnx / .tflite / .mlpackage, run in its format's runtime."""

    def __init__(self, path: str):
        from edgefa.runtime.formats import format_of_path

        self.path = Path(path)
        self.format = format_of_path(self.path)

    def load(self, threads: int, crops: np.ndarray):
        from edgefa.runtime.artifact import load_runner
        from edgefa.runtime.inputs import prepare_input

        _, runner = load_runner(self.path, threads)
        self.metadata = runner.metadata
        if getattr(runner, "runs_here", True) is False:
            return None  # CoreML off macOS: spec only
        if "edgefa.input" not in runner.metadata:
            raise EdgefaError(f"{self.path}: no edgefa.input metadata (not exported by edgefa export?)")
        x = prepare_input(crops, json.loads(runner.metadata["edgefa.input"]))
        return lambda: runner.run(x)

    def info(self) -> dict:
        meta = getattr(self, "metadata", {})
        as_int = (lambda k: int(meta[k]) if meta.get(k, "").isdigit() else None)
        return {"format": self.format.name, "runtime": self.format.runtime_key,
                "precision": meta.get("edgefa.precision", "?"), "model": meta.get("edgefa.model", "?"),
                "postprocess": json.loads(meta.get("edgefa.postprocess", "false")),
                "training_data": json.loads(meta.get("edgefa.training_data", '"unknown"')),
                "params": as_int("edgefa.params"), "macs": as_int("edgefa.macs"),
                "size_mb": file_size_mb(self.path), "size_of": "file", **metadata_info(meta)}

    def predictor(self, threads: int):
        from edgefa.runtime.artifact import ArtifactPredictor

        return ArtifactPredictor(self.path, threads=threads)


class TorchTarget:
    """A PyTorch model as ``edgefa eval`` takes it: a .pt checkpoint, a peer spec or a registry name."""

    def __init__(self, spec: str):
        self.spec = spec
        self._predictor = None

    def predictor(self, threads: int):
        import torch

        from edgefa.converters.export import load_source
        from edgefa.predictor import TorchPredictor

        torch.set_num_threads(threads)
        if self._predictor is None:  # export's loader: the same model and provenance an exported file gets
            src = load_source(self.spec)
            self.training_data = json.loads(src.metadata.get("edgefa.training_data", '"unknown"'))
            self._predictor = TorchPredictor(src.model, src.face_model, src.label)
        return self._predictor

    def load(self, threads: int, crops: np.ndarray):
        import torch

        from edgefa.predictor import to_model_input

        pred = self.predictor(threads)
        x = to_model_input(torch.from_numpy(crops), pred.model)

        def call():
            with torch.inference_mode():
                return pred.model(x)
        return call

    def info(self) -> dict:
        from edgefa.profile import count_macs, count_params

        model = self._predictor.model
        state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        return {"format": "torch", "runtime": "torch", "precision": "fp32",
                "model": getattr(model, "registry_name", "?"), "postprocess": False,
                "training_data": self.training_data,
                "params": count_params(model), "macs": count_macs(model),
                "size_mb": state_bytes / 1e6, "size_of": "fp32 state_dict"}


class ForeignTFLiteTarget:
    """A .tflite not made by edgefa: latency with its own input; accuracy only for MediaPipe's
    face_landmark, through its learned 468 -> 68 mapping (``edgefa.peers.mediapipe_face``)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def predictor(self, threads: int):
        from edgefa.peers.mediapipe_face import MediaPipeFacePredictor

        return MediaPipeFacePredictor(self.path, threads=threads)

    def load(self, threads: int, crops: np.ndarray):
        import cv2

        from edgefa.runtime.tflite import interpreter

        interp = interpreter(str(self.path), threads=threads)
        interp.allocate_tensors()
        detail = interp.get_input_details()[0]
        _, h, w, _ = detail["shape"]
        # MediaPipe's convention: RGB in [0, 1] at the model's own size (192x192 for face_landmark)
        x = np.stack([cv2.resize(c[..., ::-1], (int(w), int(h)), interpolation=cv2.INTER_LINEAR) for c in crops[:1]])
        x = (x.astype(np.float32) / 255.0).astype(detail["dtype"])
        self._input = f"{int(h)}x{int(w)}x3 {np.dtype(detail['dtype']).name}"
        outputs = interp.get_output_details()

        def call():
            interp.set_tensor(detail["index"], x)
            interp.invoke()
            return [interp.get_tensor(o["index"]) for o in outputs]
        return call

    def info(self) -> dict:
        return {"format": "tflite", "runtime": "litert", "precision": tflite_weight_precision(self.path),
                "model": self.path.stem, "postprocess": False, "training_data": "unknown (third-party file)",
                "params": tflite_param_count(self.path), "macs": None, "size_mb": file_size_mb(self.path),
                "size_of": "file", "input": getattr(self, "_input", "?")}


def _tflite_constants(path: Path):
    from edgefa.runtime.tflite import schema_module

    schema = schema_module()
    content = path.read_bytes()
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buf = model.Buffers(tensor.Buffer())
        if buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1):
            yield tensor


def tflite_param_count(path: Path) -> int | None:
    """Elements of the constant tensors (weights) of a TFLite file: the params of a foreign model."""
    try:
        return int(sum(int(np.prod(t.ShapeAsNumpy())) if t.ShapeLength() else 1 for t in _tflite_constants(path)))
    except Exception:  # noqa: BLE001  (no schema module, odd file: the column says n/a)
        return None


def tflite_weight_precision(path: Path) -> str:
    try:
        from edgefa.runtime.tflite import schema_module

        names = {v: k for k, v in vars(schema_module().TensorType).items() if not k.startswith("_")}
        kinds = {names.get(t.Type(), "?") for t in _tflite_constants(path) if t.ShapeLength() > 1}
        return "fp16" if "FLOAT16" in kinds else "int8" if "INT8" in kinds else "fp32"
    except Exception:  # noqa: BLE001
        return "?"


def make_target(kind: str, ref: str):
    return {"file": FileTarget, "torch": TorchTarget, "foreign-tflite": ForeignTFLiteTarget}[kind](ref)


def run_accuracy(target, data: str, threads: int, overlay_path: str | None, batch: int = 64) -> dict:
    from edgefa.data.base import original_to_crop
    from edgefa.data.registry import create_dataset
    from edgefa.evaluate import predict_dataset, score_predictions

    dataset = create_dataset(data)
    predictor = target.predictor(threads)
    raw = predict_dataset(predictor, dataset, batch=batch, progress=False)
    result = score_predictions(raw, dataset, predictor.crop_size)
    block = result.get("nme") or result.get("nme21")
    if overlay_path and block is not None and "per_face" in block:
        per_face = np.asarray(block["per_face"], dtype=np.float64)
        order = np.argsort(np.where(np.isfinite(per_face), per_face, np.inf))
        finite = int(np.isfinite(per_face).sum())
        picks = [int(order[0]), int(order[finite // 2]), int(order[finite - 1])] if finite else []
        roi = raw["roi_box"][picks]
        pred = raw["landmarks"][picks].astype(np.float64) * (dataset.size / predictor.crop_size)
        buffer = io.BytesIO()  # written whole, then renamed: a killed worker leaves no half file
        np.savez_compressed(buffer, index=np.asarray(picks), nme=per_face[picks],
                            image=np.stack([dataset[i]["image"] for i in picks]), pred=pred[..., :2],
                            gt=original_to_crop(raw["pts68"][picks], roi, dataset.size)[..., :2])
        atomic_write_bytes(overlay_path, buffer.getvalue())
    for blk in (v for k, v in result.items() if k.startswith("nme")):
        blk.pop("per_face", None)  # kept in the overlay file; the CED curve summarises it
    return result


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    die_with_parent(job.get("parent_pid"))
    target = make_target(job["kind"], job["ref"])
    baseline = rss_mb()
    crops = latency_crops(job.get("data"), job["batch"])
    failed = False
    ran = False
    memory = {}
    for threads in job["threads"]:
        try:
            before = rss_mb()
            call = target.load(threads, crops)
            if call is None:
                emit("row", threads=threads, status="needs macOS", note="CoreML runs only on macOS; spec loaded")
                continue
            times = time_calls(call, warmup=job["warmup"], runs=job.get("runs"), min_time=job["min_time"])
            if not memory:  # first load only: later ones reuse allocator pools and read lower
                memory = {"model_mb": rss_mb() - before}
            emit("row", threads=threads, status="ok", latency=latency_stats(times, job["batch"]))
            ran = True
        except EdgefaError as exc:
            emit("row", threads=threads, status="failed", note=str(exc).splitlines()[0])
            failed = True
            break
    try:
        emit("info", **target.info(), memory={**memory, "process_start_mb": baseline,
                                                "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001  (info is best effort: the row already says what failed)
        emit("info", note=f"{type(exc).__name__}: {exc}")
    if ran and job.get("data") and job.get("accuracy", True):
        try:
            result = run_accuracy(target, job["data"], max(job["threads"]), job.get("overlay"))
            emit("accuracy", status="ok", data=job["data"], **result)
        except EdgefaError as exc:
            emit("accuracy", status="failed", note=str(exc).splitlines()[0])
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main(sys.argv[1]))
    except Exception as exc:  # noqa: BLE001  (unexpected: one line for the row, the trace on stderr)
        traceback.print_exc()
        emit("crash", note=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise SystemExit(1) from None
