"""benchmarks/device_train.sh: the GPU lease's one script answers bad groups in one line and
carries only what each group reads (checked without building a pack)."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_train.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args, env=None, cwd=None):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("args", [("prepare", "bogus"), ("run", "10", "bogus")])
def test_an_unknown_group_is_one_line_naming_the_groups(args):
    proc = _run(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "device_train: unknown group 'bogus' (refined | distill | heads | prune)"


def test_each_group_carries_what_it_reads(tmp_path):
    import os

    carry_of = SCRIPT.read_text().split("carry_of() {", 1)[1].split("\n}\n", 1)[0]
    script = f"carry_of() {{{carry_of}\n}}\nfor g in refined distill heads prune; do carry_of $g; done"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "SOURCES": "runs/a runs/b"}).stdout.splitlines()
    assert out == [".pack/data .pack/labels.npz", ".pack/data .pack/peers", ".pack/data .pack/peers",
                   ".pack/data .pack/labels.npz runs/a/best.pt runs/b/best.pt"]
