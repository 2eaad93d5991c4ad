"""Machine facts recorded with every benchmark run: CPU, cores, OS, Python and runtime versions."""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

from edgefa.paths import shell_command

# every package whose version can change a latency or accuracy number
PACKAGES = ("edgefa", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxslim", "nncf", "litert-torch",
            "ai-edge-litert", "tflite-runtime", "coremltools", "torchao", "torch-pruning")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
            "machine": platform.machine(), "versions": versions()}


def machine_line(facts: dict | None = None) -> str:
    facts = facts or machine_facts()
    return f"{facts['cpu']}, {facts['cores']} cores, {facts['os']}"


def versions_line(facts: dict | None = None, skip_missing: bool = True) -> str:
    vers = (facts or machine_facts())["versions"]
    return ", ".join(f"{k} {v}" for k, v in vers.items() if not (skip_missing and v == "not installed"))


def script_command(argv: list[str] | None) -> str:
    """The command line that ran a benchmark script, for the top of its report."""
    import sys
    from pathlib import Path

    return shell_command(["python", Path(sys.argv[0]).resolve().as_posix(), *(argv if argv is not None else sys.argv[1:])])
