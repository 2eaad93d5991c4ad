"""``edgefa export``: every requested format x precision, each through the parity gate.

Order of work: check every flag against the format table, the extras, the output folder and the
model before converting anything; then per artifact: convert to a hidden temp path in the output
folder -> run it in its runtime on the same crops as PyTorch (or validate the spec where the
runtime cannot run, e.g. CoreML on Linux) -> rename into place only if the gate passes.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgefa import __version__
from edgefa.converters.graph import ExportGraph
from edgefa.converters.parity import compare, gate, torch_outputs
from edgefa.detect.crop import crop_metadata
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_json, check_writable_dir, file_size_mb, temp_sibling
from edgefa.paths import portable
from edgefa.quantization.qat import is_qat  # importing it also lets QAT checkpoints load (a rebuild hook)
from edgefa.runtime.formats import FORMATS, ExportFormat, plan

DEFAULT_CALIB = "synthetic:seed=7"
DEFAULT_PARITY = "synthetic:seed=8"


@dataclass
class Row:
    format: str
    precision: str
    file: str = ""
    size_mb: float = 0.0
    seconds: float = 0.0
    status: str = "failed"  # ok | failed | unverified (spec checked, runtime not available here)
    reason: str = ""
    parity: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Source:
    model: object
    face_model: object
    name: str  # registry name of the architecture
    label: str  # file stem for the artifacts
    metadata: dict


def load_source(spec: str, name: str | None = None) -> Source:
    """A model spec as ``edgefa eval`` takes it: a .pt checkpoint, ``3ddfa-v2-mb05:PATH`` or a name."""
    from edgefa.models.checkpoint import model_from_checkpoint
    from edgefa.predictor import load_predictor

    meta = {}
    path = Path(spec)
    if path.suffix in (".pt", ".pth") and path.is_file() and ":" not in spec:
        model, face_model, state = model_from_checkpoint(path)
        cfg = state.get("config", {})
        meta["edgefa.training_data"] = json.dumps(cfg.get("data", {}).get("train", "unknown"))
        if state.get("metrics"):
            m = state["metrics"]
            meta["edgefa.val"] = json.dumps({"data": cfg.get("data", {}).get("val", "?"),
                                              "balanced_nme": round(m.get("balanced_mean", float("nan")), 3),
                                              "bins": {k: round(v, 3) for k, v in m.get("bins", {}).items()},
                                              "epoch": state.get("epoch")})
        label = path.parent.name if path.stem in ("best", "last") else path.stem
        if state.get("compression"):  # pruning / QAT summary without the per-layer shapes
            meta["edgefa.compression"] = json.dumps(
                {stage: {k: v for k, v in rec.items() if k != "arch"} for stage, rec in state["compression"].items()})
    else:  # the peer or an untrained registry model: the predictor parses those specs
        pred = load_predictor(spec)
        model, face_model = pred.model, pred.face_model
        peer = spec.startswith("3ddfa-v2")
        shipped = spec.endswith(":pretrained")
        if shipped:  # the header of the shipped weights says how they were trained and scored
            from edgefa.models.pretrained import pretrained_path, read_weights

            header = read_weights(pretrained_path(model.registry_name))[2]
            meta["edgefa.training_data"] = json.dumps(header.get("training", {}).get("data", "unknown"))
            if header.get("eval"):  # what the PyTorch weights scored; the file's own score: --eval-data
                meta["edgefa.weights_eval"] = json.dumps(header["eval"])
        else:
            meta["edgefa.training_data"] = json.dumps("300W-LP (3DDFA-V2 release weights)" if peer
                                                      else "none: random initialisation")
        label = spec.split(":", 1)[0] if peer else model.registry_name
    return Source(model, face_model, model.registry_name, name or label, meta)


def load_crops(spec: str, n: int, what: str) -> np.ndarray:
    """n uint8 BGR crops from a dataset spec (``synthetic:...`` gets ``n=`` appended if absent)."""
    from edgefa.data.registry import create_dataset

    if n < 1:
        raise EdgefaError(f"--{what}: need at least one crop, got n={n}")
    if spec.startswith("synthetic") and "n=" not in spec:
        spec = f"{spec}{',' if ':' in spec else ':'}n={n}"
    try:
        dataset = create_dataset(spec)
    except EdgefaError as exc:
        raise EdgefaError(f"--{what}: {exc}") from None
    if len(dataset) == 0:
        raise EdgefaError(f"--{what} {spec}: the dataset is empty")
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    return np.stack([dataset[int(i)]["image"] for i in np.unique(idx)])


def check_name(name: str | None) -> None:
    """``--name`` is a file-name stem inside the output folder, never a path out of it."""
    if name is None:
        return
    bad = (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
           or not name.isprintable())
    if bad:
        raise EdgefaError(f"--name {name!r}: must be a file name stem (no '/', '\\', leading '.'), not a path")


def license_terms(training_data: str, face_model: str) -> str:
    """The terms a device file inherits from its training data and face model (code: MIT)."""
    terms = []
    data = training_data.lower()
    if "aflw" in data or "300w" in data:
        terms.append("trained on AFLW / 300W-LP faces: research and non-commercial use only")
    if face_model.startswith("bfm"):
        terms.append("3DMM parameters and landmarks derive from the Basel Face Model: academic, non-commercial use")
    if not terms:
        return "MIT (edgefa's code; trained on its own synthetic faces, no third-party data or face model)"
    return "; ".join(terms) + "; edgefa's code: MIT"


def metadata_for(src: Source, graph: ExportGraph, fmt: ExportFormat, precision: str) -> dict[str, str]:
    from edgefa.models.checkpoint import git_commit
    from edgefa.profile import count_macs, count_params

    meta = {
        "edgefa.version": __version__,
        "edgefa.commit": git_commit(),
        "edgefa.model": src.name,
        "edgefa.name": src.label,
        "edgefa.format": fmt.name,
        "edgefa.precision": precision,
        "edgefa.postprocess": json.dumps(graph.postprocess),
        "edgefa.face_model": graph.face_model_name,
        "edgefa.crop_size": str(graph.fm_size),
        "edgefa.input": json.dumps(graph.input_spec()),
        "edgefa.outputs": json.dumps(graph.output_meanings),
        # the network's size, so benchmarks of the file need not rebuild the PyTorch model
        "edgefa.params": str(count_params(graph.net)),
        "edgefa.macs": str(count_macs(graph.net)),
        **src.metadata,
    }
    meta["edgefa.crop"] = json.dumps(crop_metadata(graph.fm_size))
    meta["edgefa.license"] = license_terms(meta.get("edgefa.training_data", ""), graph.face_model_name)
    meta = {k: portable(v) for k, v in meta.items()}
    if not graph.postprocess:
        meta["edgefa.param_mean"] = json.dumps([float(v) for v in graph.param_mean])  # full float32 precision
        meta["edgefa.param_std"] = json.dumps([float(v) for v in graph.param_std])
    return meta


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def export_one(fmt: ExportFormat, precision: str, graph: ExportGraph, src: Source, out: Path,
               calib: np.ndarray | None, x: np.ndarray, ref: dict, options: dict) -> Row:
    row = Row(fmt.name, precision)
    if is_qat(graph.net) and (precision != "int8" or fmt.name == "coreml"):
        row.reason = ("a QAT checkpoint exports as ONNX / TFLite int8 (its learned scales); "
                      "export the float checkpoint it started from for other formats / precisions")
        return row
    final = out / fmt.file_name(src.label + ("" if graph.postprocess else "-raw"), precision)
    tmp = temp_sibling(final)
    start = time.perf_counter()
    fmt.require()
    module = importlib.import_module(fmt.writer)
    try:
        kwargs = {}
        if fmt.name == "tflite" and precision == "int8" and options.get("int8_io"):
            kwargs["int8_io"] = True
        if fmt.name == "tflite" and precision == "int8" and options.get("int8_float") is not None:
            kwargs["float_parts"] = options["int8_float"]
        if fmt.name == "onnx" and precision == "int8":
            kwargs["quantizer"] = options.get("onnx_quantizer", "nncf")
        row.info = module.export(graph, tmp, precision, calib, metadata_for(src, graph, fmt, precision), **kwargs) or {}
        if fmt.runs_here():
            runner = fmt.runner_module().load(tmp, threads=options.get("threads"))
            row.parity = compare(graph, ref, runner.run(x))
            passed, row.reason = gate(row.parity, precision)
            status = "ok" if passed else "failed"
        else:
            check = module.validate(tmp, graph)
            row.parity = {"spec": check}
            status = "unverified" if check.get("ok") else "failed"
            row.reason = (f"spec valid; run/parity need {', '.join(fmt.runs_on)}" if check.get("ok")
                          else "; ".join(check.get("problems", ["spec check failed"])))
        row.size_mb = round(file_size_mb(tmp), 3)
        if status != "failed":
            _remove(final)
            os.replace(tmp, final)
            row.file = str(final)
        row.status = status  # only once the file is in place (or kept out by the gate)
    except EdgefaError as exc:
        row.reason = str(exc)
    except Exception as exc:  # a converter crash is a failed row, not a crashed command
        row.reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    finally:
        _remove(tmp)  # no half file, whatever happened (Ctrl-C included)
        row.seconds = round(time.perf_counter() - start, 1)
    return row


def run_export(model: str, formats: str, precisions: str, out: str | Path, calib_data: str | None = None,
               calib_n: int = 200, parity_data: str | None = None, parity_n: int = 32, postprocess: bool = False,
               input_color: str = "RGB", int8_io: bool = False, threads: int | None = None,
               name: str | None = None, eval_data: str | None = None, onnx_quantizer: str = "nncf",
               int8_float: str | None = None, progress=print) -> tuple[list[Row], Path]:
    """... ``eval_data``: a dataset spec (e.g. ``aflw2000-3d``) every file that passed parity is
    evaluated on, in its own runtime; the scores go into the file (``edgefa.eval``) and the summary.
    ``onnx_quantizer``: how a float model becomes an ONNX int8 file (``nncf`` | ``onnxruntime``).
    ``int8_float``: the parts a calibrated TFLite int8 file keeps float (``--int8-float``; None: the
    default, ``stem``)."""
    from edgefa.converters.onnx_int8 import int8_settings
    from edgefa.quantization.float_parts import parse_float_parts

    check_name(name)
    int8_settings(onnx_quantizer)  # a typo fails here, before any work
    float_parts = None if int8_float is None else parse_float_parts(int8_float)
    jobs = plan(formats, precisions)  # unknown format / unsupported precision: before any work
    for fmt in dict.fromkeys(f for f, _ in jobs):
        fmt.require()
    eval_set = None
    if eval_data:  # a bad spec fails here, before any file is written
        from edgefa.data.registry import create_dataset

        try:
            eval_set = create_dataset(eval_data)
        except EdgefaError as exc:
            raise EdgefaError(f"--eval-data {eval_data}: {exc}") from None
    src = load_source(model, name)
    graph = ExportGraph(src.model, src.face_model, postprocess=postprocess, input_color=input_color.upper())
    needs_calib = any(p == "int8" and f.name != "coreml" for f, p in jobs)
    calib = graph.prepare(load_crops(calib_data or DEFAULT_CALIB, calib_n, "calib-data")) if needs_calib else None
    x = graph.prepare(load_crops(parity_data or DEFAULT_PARITY, parity_n, "parity-data"))
    ref = torch_outputs(graph, x)
    out = check_writable_dir(out, "output")
    rows = []
    options = {"int8_io": int8_io, "threads": threads, "onnx_quantizer": onnx_quantizer, "int8_float": float_parts}
    for i, (fmt, precision) in enumerate(jobs, 1):
        progress(f"[{i}/{len(jobs)}] {fmt.name} {precision} ...")
        row = export_one(fmt, precision, graph, src, out, calib, x, ref, options)
        progress(f"[{i}/{len(jobs)}] {fmt.name} {precision}: {row.status}"
                 + (f" ({row.reason})" if row.reason else "") + f" in {row.seconds:.0f} s")
        rows.append(row)
    if eval_data:
        for row in rows:
            if row.status == "ok" and hasattr(importlib.import_module(FORMATS[row.format].writer), "stamp"):
                row.info["eval"] = evaluate_file(row, eval_set, eval_data, threads)
                progress(f"{Path(row.file).name}: {eval_data}: balanced NME {row.info['eval']['balanced_nme']:.3f}")
    summary = {"model": model, "name": src.label, "postprocess": postprocess, "edgefa": __version__,
               "calib_data": calib_data or DEFAULT_CALIB if needs_calib else None, "calib_n": calib_n,
               "parity_data": parity_data or DEFAULT_PARITY, "parity_n": len(x), "rows": [asdict(r) for r in rows]}
    summary_path = out / f"{src.label}-export.json"
    atomic_write_json(summary_path, summary)
    return rows, summary_path


def evaluate_file(row: Row, dataset, data: str, threads: int | None) -> dict:
    """The file's accuracy on ``dataset`` (spec ``data``), run in its own runtime, written into the file."""
    from edgefa.evaluate import evaluate
    from edgefa.runtime.artifact import ArtifactPredictor

    result = evaluate(ArtifactPredictor(row.file, threads=threads or 1), dataset, progress=False)
    if "nme" not in result:
        raise EdgefaError(f"--eval-data {data}: has no 68-point labels to score the file against")
    nmes = result["nme"]
    record = {"data": portable(data), "measured_on": f"this file, {row.format} {row.precision}",
              "balanced_nme": round(nmes["balanced_mean"], 3), "plain_nme": round(nmes["plain_mean"], 3),
              "bins": {k: round(v, 3) for k, v in nmes["bins"].items()}}
    if result.get("pose_mae"):
        record["pose_mae_deg"] = {k: round(v, 2) for k, v in result["pose_mae"].items() if isinstance(v, float)}
    importlib.import_module(FORMATS[row.format].writer).stamp(Path(row.file), {"edgefa.eval": json.dumps(record)})
    return record


def format_rows(rows: list[Row]) -> str:
    head = f"{'format':<8}{'precision':<10}{'size MB':>9}{'params Δmax':>13}{'lm px Δmax':>12}{'NME pts Δ':>11}  status"
    lines = [head, "-" * (len(head) + 20)]
    for r in rows:
        p = r.parity if "landmark_px_max" in r.parity else {}
        num = (lambda k, f, p=p: f"{p[k]:{f}}" if k in p else "-")
        lines.append(f"{r.format:<8}{r.precision:<10}{r.size_mb:>9.2f}{num('params_max_abs', '.2e'):>13}"
                     f"{num('landmark_px_max', '.4f'):>12}{num('nme_points_mean', '.4f'):>11}  "
                     f"{r.status:<11}{Path(r.file).name if r.file else ''}"
                     + (f"  {r.reason}" if r.reason else ""))
    return "\n".join(lines)
