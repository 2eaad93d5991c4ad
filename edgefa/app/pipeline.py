"""``edgefa pipeline --config FILE [key=value ...]``: train -> (prune) -> (QAT) -> export -> bench -> report.

Each stage writes into ``OUTPUT/<stage>/`` and records a key (a digest of its settings and of its
inputs' keys) in ``OUTPUT/pipeline.json``: a finished stage whose key is unchanged and whose outputs
exist is skipped, so a re-run after an interruption or a changed setting redoes only what changed.
An interrupted training stage resumes from its ``last.pt``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from pathlib import Path

from edgefa import __version__
from edgefa.converters.export import check_name
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_json, check_writable
from edgefa.paths import fill_shared, shell_command
from edgefa.training.config import CONFIG_DIR

DEFAULTS = {
    "name": "pipeline",
    "seed": 0,  # passed to the training recipe, so one number fixes the whole run
    "output": "runs/{name}",
    "train": {"config": "synthetic-quick.yaml", "overrides": [], "checkpoint": None},  # checkpoint: skip training
    "prune": {"enabled": False, "ratio": 0.3, "method": "magnitude", "finetune_epochs": 1},
    "qat": {"enabled": False, "config": None, "overrides": []},
    "export": {"formats": "onnx,tflite,coreml", "precision": "fp32,fp16,int8", "postprocess": True,
               "calib_data": None, "calib_n": 100, "parity_data": None, "parity_n": 16},
    "bench": {"runtimes": "torch,onnxruntime,litert,coreml", "threads": "1,2", "warmup": 5, "runs": None,
              "min_time": 1.0, "data": "synthetic:seed=2,n=100", "peers": False},
    "report": {"title": None},
}
STAGES = ("train", "prune", "qat", "export", "bench", "report")


def load_pipeline_config(path: str | Path, overrides: list[str] = ()) -> dict:
    from edgefa.training.config import merge_checked, parse_overrides, read_yaml_mapping

    cfg = copy.deepcopy(DEFAULTS)
    merge_checked(cfg, read_yaml_mapping(path), str(path), defaults=DEFAULTS)
    for where, tree in parse_overrides(overrides):
        merge_checked(cfg, tree, where, defaults=DEFAULTS)
    for key in ("train", "qat"):
        if not isinstance(cfg[key]["overrides"], list):
            raise EdgefaError(f"{key}.overrides: expected a list of key=value strings, e.g. "
                              f"'{key}.overrides=[epochs=2]', not {cfg[key]['overrides']!r}")
    for key in ("ratio", "finetune_epochs"):
        value = cfg["prune"][key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EdgefaError(f"prune.{key}: expected a number, not {value!r}")
    for section, key in (("bench", "data"), ("export", "calib_data"), ("export", "parity_data")):
        cfg[section][key] = fill_shared(cfg[section][key])
    try:  # the name is a file stem for exports and the report: never a path out of the run folder
        check_name(str(cfg["name"]))
    except EdgefaError as exc:
        raise EdgefaError(f"{path}: name: {str(exc).partition(': ')[2]}") from None
    cfg["output"] = str(cfg["output"]).format(name=cfg["name"])
    cfg["_config_dir"] = str(Path(path).resolve().parent)
    return cfg


def find_config(name: str, near: str, key: str = "train.config") -> Path:
    """A recipe path as given, beside the pipeline config, or among edgefa's bundled recipes."""
    for cand in (Path(name), Path(near) / name, CONFIG_DIR / name):
        if cand.is_file():
            return cand
    raise EdgefaError(f"{key} {name}: not found (looked in ., {near} and {CONFIG_DIR})")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    def __init__(self, cfg: dict, progress: bool = True, command: str = ""):
        self.cfg = cfg
        self.command = command
        self.out = Path(cfg["output"])
        self.progress = progress
        self.state_path = self.out / "pipeline.json"
        check_writable(self.state_path, "pipeline output")
        self.state = {"stages": {}}
        if self.state_path.is_file():
            try:
                self.state = json.loads(self.state_path.read_text())
                assert isinstance(self.state.get("stages"), dict)
                assert all(isinstance(v, dict) for v in self.state["stages"].values())
            except (ValueError, AssertionError, AttributeError):
                raise EdgefaError(f"{self.state_path}: not a pipeline state file (delete it to start over)") from None
        self.keys: dict[str, str] = {}
        self.previous: dict[str, dict] = {}  # each stage's record before this run replaced it

    def _save(self) -> None:
        atomic_write_json(self.state_path, self.state)

    def stage(self, name: str, inputs: dict, run, outputs_of) -> dict:
        """Run ``run()`` unless the recorded key matches and ``outputs_of(result)`` all exist."""
        key = digest(name, __version__, inputs, [self.keys.get(s) for s in STAGES[:STAGES.index(name)]])
        self.keys[name] = key
        done = self.state["stages"].get(name, {})
        number = f"[{STAGES.index(name) + 1}/{len(STAGES)}]"
        if done.get("key") == key and done.get("finished") and all(Path(p).exists() for p in outputs_of(done["result"])):
            print(f"{number} {name}: unchanged, skipped (finished {done['finished']})", flush=True)
            return done["result"]
        print(f"{number} {name} ...", flush=True)
        start = time.perf_counter()
        self.previous[name] = done
        self.state["stages"][name] = {"key": key, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._save()
        result = run()
        self.state["stages"][name].update(result=result, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                                          seconds=round(time.perf_counter() - start, 1))
        self._save()
        print(f"{number} {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
        return result

    def skip(self, name: str, why: str) -> None:
        self.keys[name] = "off"
        print(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}: off ({why})", flush=True)

    # --- stages ---
    def train(self) -> str:
        cfg = self.cfg["train"]
        if cfg["checkpoint"]:
            path = Path(cfg["checkpoint"])
            if not path.is_file():
                raise EdgefaError(f"train.checkpoint {path}: file not found")
            self.skip("train", f"using {path}")
            self.keys["train"] = digest(str(path.resolve()), path.stat().st_size, path.stat().st_mtime)
            return str(path)
        recipe = find_config(cfg["config"], self.cfg["_config_dir"])
        run_dir = self.out / "train"
        overrides = [f"seed={self.cfg['seed']}", f"output={run_dir}", *cfg["overrides"]]

        def run():
            from edgefa.training.config import load_config
            from edgefa.training.trainer import train

            tcfg = load_config(recipe, overrides)
            last = run_dir / "last.pt"
            prev = self.previous.get("train", {})
            # an interrupted run with the same settings continues exactly; other settings start over
            same = prev.get("key") == self.keys["train"] and not prev.get("finished")
            resume = str(last) if last.is_file() and same else None
            if resume:
                print(f"  resuming from {last}", flush=True)
            elif run_dir.exists():
                shutil.rmtree(run_dir)
            train(tcfg, resume=resume, progress=self.progress,
                  command=shell_command(["edgefa", "train", "--config", recipe, *overrides]))
            return {"checkpoint": str(run_dir / "best.pt")}
        result = self.stage("train", {"recipe": recipe.read_text(), "overrides": overrides}, run,
                            lambda r: [r["checkpoint"]])
        return result["checkpoint"]

    def compress(self, name: str, checkpoint: str) -> str:
        cfg = self.cfg[name]
        if not cfg.get("enabled"):
            self.skip(name, f"{name}.enabled=false")
            return checkpoint
        try:
            from edgefa.app import compress as recipe
        except ImportError:
            raise EdgefaError(f"{name}: the compression stages need edgefa's quantization package") from None
        key = dict(cfg)
        if cfg.get("config"):  # a QAT recipe named like train.config; its text is part of the stage key
            path = find_config(cfg["config"], self.cfg["_config_dir"], f"{name}.config")
            cfg, key = {**cfg, "config": str(path)}, {**cfg, "config_text": path.read_text()}
        run = (lambda: {"checkpoint": str(recipe.run_stage(name, checkpoint, cfg, self.out / name,
                                                           seed=self.cfg["seed"], progress=self.progress))})
        return self.stage(name, key, run, lambda r: [r["checkpoint"]])["checkpoint"]

    def export_jobs(self, checkpoint: str, float_checkpoint: str) -> list[tuple[str, str, str, str]]:
        """(checkpoint, formats, precisions, file label) per export call. After QAT, its checkpoint
        gives the ONNX / TFLite int8 files (learned scales); every other requested format x precision
        comes from the float checkpoint QAT started from."""
        from edgefa.runtime.formats import parse_list

        cfg, name = self.cfg["export"], self.cfg["name"]
        if checkpoint == float_checkpoint:
            return [(checkpoint, cfg["formats"], cfg["precision"], name)]
        formats, precisions = parse_list(cfg["formats"], "format"), parse_list(cfg["precision"], "precision")
        qat_formats = [f for f in formats if f in ("onnx", "tflite")] if "int8" in precisions else []
        jobs = [(checkpoint, ",".join(qat_formats), "int8", f"{name}-qat")] if qat_formats else []
        by_precisions: dict[str, list[str]] = {}  # one call (one summary JSON) per distinct precision list
        for fmt in formats:
            rest = [p for p in precisions if not (fmt in qat_formats and p == "int8")]
            if rest:
                by_precisions.setdefault(",".join(rest), []).append(fmt)
        for i, (precs, fmts) in enumerate(by_precisions.items()):
            jobs.append((float_checkpoint, ",".join(fmts), precs, name if i == 0 else f"{name}-{'-'.join(fmts)}"))
        return jobs

    def export(self, checkpoint: str, float_checkpoint: str | None = None) -> str:
        from edgefa.converters.export import format_rows, run_export

        cfg = self.cfg["export"]
        folder = self.out / "export"
        jobs = self.export_jobs(checkpoint, float_checkpoint or checkpoint)

        def run():
            rows = []
            for source, formats, precisions, label in jobs:
                rows += run_export(source, formats, precisions, folder, calib_data=cfg["calib_data"],
                                   calib_n=cfg["calib_n"], parity_data=cfg["parity_data"], parity_n=cfg["parity_n"],
                                   postprocess=cfg["postprocess"], name=label)[0]
            print(format_rows(rows), flush=True)
            failed = [f"{r.format} {r.precision}" for r in rows if r.status == "failed"]
            if failed:
                print(f"  export: {len(failed)} file(s) failed their gate and are not in {folder}: {', '.join(failed)}")
            return {"folder": str(folder), "files": [str(r.file) for r in rows if r.status != "failed" and r.file],
                    "failed": failed}
        return self.stage("export", {**cfg, "jobs": jobs}, run, lambda r: [r["folder"], *r["files"]])

    def bench(self, checkpoint: str, files: list[str]) -> str:
        """The files this export made (not whatever else an earlier configuration left in the folder)."""
        from edgefa.benchmarks.bench import run_bench

        cfg = self.cfg["bench"]
        out = self.out / "bench"

        def run():
            _, code = run_bench([*files, checkpoint], out, runtimes=cfg["runtimes"], threads=cfg["threads"],
                                warmup=cfg["warmup"], runs=cfg["runs"], min_time=cfg["min_time"], data=cfg["data"],
                                peers=cfg["peers"], progress=self.progress, command=self.command, stage="bench")
            return {"folder": str(out), "exit_code": code}
        return self.stage("bench", {**cfg, "files": files}, run,
                          lambda r: [str(Path(r["folder"]) / "bench.json")])["folder"]

    def report(self, bench_dir: str) -> str:
        from edgefa.benchmarks.report import write_report

        target = self.out / "report" / self.cfg["name"]

        def run():
            paths = write_report([bench_dir], target, title=self.cfg["report"]["title"] or
                                 f"edgefa pipeline: {self.cfg['name']}", command=self.command, stage="report")
            return {"files": [str(p) for p in paths]}
        return self.stage("report", self.cfg["report"], run, lambda r: r["files"])["files"]

    def run(self) -> list[str]:
        checkpoint = self.train()
        checkpoint = self.compress("prune", checkpoint)
        float_checkpoint = checkpoint
        checkpoint = self.compress("qat", checkpoint)
        exported = self.export(checkpoint, float_checkpoint)
        bench_dir = self.bench(float_checkpoint, exported["files"])  # the torch row: the float model
        return self.report(bench_dir)


def run_pipeline(config_path: str, overrides: list[str] = (), progress: bool = True) -> int:
    cfg = load_pipeline_config(config_path, overrides)
    pipe = Pipeline(cfg, progress=progress, command=shell_command(["edgefa", "pipeline", "--config", str(config_path), *overrides]))
    start = time.perf_counter()
    files = pipe.run()
    md = next((f for f in files if f.endswith(".md")), None)
    print(f"pipeline {cfg['name']}: finished in {(time.perf_counter() - start) / 60:.1f} min; report: {md} "
          f"(+ .html, .csv, .json)")
    bench = pipe.state["stages"].get("bench", {}).get("result", {})
    failed = pipe.state["stages"].get("export", {}).get("result", {}).get("failed")
    return 1 if bench.get("exit_code") or failed else 0  # a failed file or row: non-zero, the rest still ran
