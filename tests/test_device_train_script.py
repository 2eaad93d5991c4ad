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

    text = SCRIPT.read_text()  # the SOURCES split and carry_of, run alone: no pack is built
    start = text.index("SOURCES=${SOURCES:-}")
    definitions = text[start:text.index("\n}\n", start) + 3]

    def carries(sources: str) -> subprocess.CompletedProcess:
        script = f"{definitions}for g in refined distill heads prune; do carry_of $g || echo failed; done"
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "SOURCES": sources})

    assert carries("  runs/a \n runs/b ").stdout.splitlines() == [
        ".pack/data .pack/labels.npz", ".pack/data .pack/peers", ".pack/data .pack/peers",
        ".pack/data .pack/labels.npz runs/a/best.pt runs/b/best.pt"]
    unset, three = carries(""), carries("runs/a runs/b runs/c")
    assert unset.stdout.splitlines()[-1] == three.stdout.splitlines()[-1] == "failed"
    assert "set SOURCES" in unset.stderr and "at most 2 SOURCES" in three.stderr
