"""Hostile inputs and faults (issue #24): the shared case table through the CLI, and the helpers.

Cases that would hang without their fix (FIFOs, devices) and the kill -9 case run in their own
process under a timeout, so a regression fails the test instead of hanging the suite.
"""
import os
import resource
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import edgefa.benchmarks.reliability_cases as cases
import edgefa.benchmarks.reliability_inputs as inputs
from edgefa import fileio
from edgefa.app.cli import main
from edgefa.data.images import MAX_IMAGE_PIXELS, header_size, read_image
from edgefa.errors import EdgefaError

LINUX = sys.platform.startswith("linux")


def _marks(case):
    marks = []
    if case.hangs_unfixed and not hasattr(os, "mkfifo"):
        marks.append(pytest.mark.skip(reason="no FIFOs here"))
    if case.kill_parent and not LINUX:
        marks.append(pytest.mark.skip(reason="finds the worker through /proc"))
    return marks


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.klass}-{c.name}", marks=_marks(c)) for c in cases.CASES])
def test_case(case, tmp_path, capsys, monkeypatch):
    if case.hangs_unfixed or case.kill_parent:
        outcome = cases.run_case(case, tmp_path)  # own process, timeout
    else:
        argv = case.build(tmp_path)
        if inputs.FAULTS[case.fault]:
            inputs.FAULTS[case.fault](monkeypatch=monkeypatch)
        start = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse rejects a flag by exiting, as it does in a real process
            code = exc.code
        outcome = cases.judge(case, tmp_path, code, capsys.readouterr().err, time.perf_counter() - start, hung=False)
    assert outcome["ok"], outcome


DEBUGGABLE = [c for c in cases.CASES if c.code == 2 and c.one_line and not (c.hangs_unfixed or c.kill_parent)]


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.klass}-{c.name}") for c in DEBUGGABLE])
def test_debug_raises_what_the_one_line_hides(case, tmp_path, monkeypatch):
    """With --debug every one-line error is the exception itself, so the traceback shows."""
    argv = case.build(tmp_path)
    if inputs.FAULTS[case.fault]:
        inputs.FAULTS[case.fault](monkeypatch=monkeypatch)
    with pytest.raises(Exception) as info:  # noqa: B017  (any exception: what the user saw as one line)
        main(["--debug", *argv])
    assert not isinstance(info.value, SystemExit), "argparse usage errors have no traceback to show"


def _pair(stem):
    return [fileio.with_ext(stem, ".md"), fileio.with_ext(stem, ".json")]


def test_md_json_pair_is_both_or_neither(tmp_path, monkeypatch):
    stem = tmp_path / "r"
    fileio.write_md_json(stem, {"v": 1}, "old\n")
    inputs.enospc_on_file(2, monkeypatch)  # the second file of the new pair meets a full disk
    with pytest.raises(OSError, match="No space left") as info:
        fileio.write_md_json(stem, {"v": 2}, "new\n")
    assert info.value.filename == str(fileio.with_ext(stem, ".md"))  # the final name, not the temp's
    assert [p.read_text() for p in _pair(stem)] == ["old\n", '{\n  "v": 1\n}\n']  # the old pair, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temp left


def test_report_set_leaves_nothing_on_full_disk(tmp_path, monkeypatch):
    from edgefa.benchmarks.report import write_report

    run = inputs.bench_run(tmp_path / "run")
    written = write_report([str(run)], tmp_path / "a" / "rep")
    assert {p.suffix for p in written} == {".png", ".md", ".csv", ".html", ".json"}
    inputs.enospc_on_file(len(written), monkeypatch)  # the last file of the set
    with pytest.raises(OSError, match="no file of the set written"):
        write_report([str(run)], tmp_path / "b" / "rep")
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_regular_file_helpers(tmp_path):
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(EdgefaError, match=r"f.jpg: image is not a regular file \(a FIFO\)"):
        fileio.read_regular_bytes(fifo, "image")  # no writer: a blocking open would never return
    assert time.perf_counter() - start < 1
    with pytest.raises(EdgefaError, match=r"not a regular file \(a folder\)"):
        fileio.require_regular_file(tmp_path, "checkpoint")
    with pytest.raises(EdgefaError, match="checkpoint not found"):
        fileio.require_regular_file(tmp_path / "nope.pt", "checkpoint")
    fileio.refuse_special_file(tmp_path)  # folders (.mlpackage) and missing files are the caller's
    fileio.refuse_special_file(tmp_path / "nope.onnx")
    with pytest.raises(EdgefaError, match="a FIFO"):
        fileio.refuse_special_file(fifo)


@pytest.mark.parametrize("ext,params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                        (".bmp", [])])
def test_header_size_reads_real_files(ext, params):
    data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8), params)[1].tobytes()
    assert header_size(data) == (53, 37)


@pytest.mark.parametrize("name,data", [("big.png", inputs.png_bytes(60000, 60000)), ("big.jpg", inputs.jpeg_with_size(60000, 60000)),
                                       ("big.bmp", inputs.bmp_with_size(20000, 20000))])
def test_oversized_images_are_refused_before_decoding(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(EdgefaError) as info:
        read_image(path)
    assert time.perf_counter() - start < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # kB: no 1.2 GB decode
    line = str(info.value)
    assert "\n" not in line and str(path) in line and f"cap of {MAX_IMAGE_PIXELS // 1_000_000} megapixels" in line


def test_image_at_the_cap_still_reads(tmp_path):
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.zeros((8, 4000, 3), np.uint8))
    assert read_image(path).shape == (8, 4000, 3)


def test_worker_exits_when_its_parent_died_before_it_could_watch():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = f"from edgefa.benchmarks.worker import die_with_parent; die_with_parent({dead.pid}); print('survived')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=inputs.REPO,
                          env={**os.environ, "PYTHONPATH": str(inputs.REPO)})
    assert proc.returncode == 1 and "survived" not in proc.stdout
