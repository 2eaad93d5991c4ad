"""Atomic writes: a temp file in the target folder, then rename, so nothing partial is left."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from edgefa.errors import EdgefaError

# every temp file edgefa writes carries this and its process id, so a later run can tell the
# leftovers of a killed run (process gone) from another run's work in progress
TEMP_MARK = ".edgefa-tmp"
_TEMP_PID = re.compile(re.escape(TEMP_MARK) + r"(\d+)")


def temp_sibling(path: str | Path) -> Path:
    """A hidden temp name beside ``path`` (same suffix, so format writers recognise it)."""
    path = Path(path)
    return path.parent / f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files / folders a killed edgefa run left in ``folder`` (their process is gone)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.glob(f".*{TEMP_MARK}*"):
        found = _TEMP_PID.search(entry.name)
        if not found or int(found.group(1)) == os.getpid() or _alive(int(found.group(1))):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # not ours to remove after all (permissions): leave it
    return removed


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _not_regular(path: Path, mode: int, what: str) -> EdgefaError:
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a plain file")
    return EdgefaError(f"{path}: {what} is not a regular file ({kind})")


def require_regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` if it is a regular file (or a link to one), else one clear line. Reading a FIFO or a
    device blocks forever or never ends: edgefa reads regular files only, wherever it reads files."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise EdgefaError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise EdgefaError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, what)
    return path


def refuse_special_file(path: str | Path, what: str = "file") -> None:
    """One clear line when ``path`` exists and is a FIFO / socket / device; missing paths and folders
    (an .mlpackage) are left to the caller's own messages."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _not_regular(Path(path), mode, what)


def read_regular_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of a regular file. Opened non-blocking and checked on the open descriptor, so a FIFO
    swapped in after a check cannot hang the read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise EdgefaError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise EdgefaError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode, what)
        try:
            return fh.read()
        except OSError as exc:
            raise EdgefaError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def check_writable_dir(folder: str | Path, what: str = "output") -> Path:
    """Fail before any work if files cannot be written into ``folder`` (created if missing); clears
    the temp files a killed run left there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EdgefaError(f"{folder}: {what} path is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a folder above it is a file
        raise EdgefaError(f"{folder}: {what} folder is a file") from None
    except OSError as exc:
        raise EdgefaError(f"{folder}: cannot create {what} folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise EdgefaError(f"{folder}: {what} folder is not writable")
    remove_stale_temps(folder)
    return folder


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Fail before any work if the file ``path`` cannot be written (its folder is created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise EdgefaError(f"{path}: {what} path is a directory, expected a file")
    check_writable_dir(path.parent, what)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def with_ext(stem: str | Path, suffix: str) -> Path:
    """STEM + suffix, keeping dots in the stem ("run-1.5" -> "run-1.5.md", not "run-1.md")."""
    stem = Path(stem)
    return stem.parent / (stem.name + suffix)


def write_file_set(files: dict[Path, bytes]) -> list[Path]:
    """Write a set of files all or nothing: every file to its temp name first, then all renamed into
    place. A failure (disk full) removes the temps and raises OSError naming the final path, so a
    reader never finds half a set (a report's .md beside no .html). Returns the paths written."""
    temps: dict[Path, Path] = {}
    placed: list[Path] = []
    path = None
    try:
        for path, data in files.items():
            path = Path(path)
            temps[path] = temp_sibling(path)
            with open(temps[path], "wb") as fh:
                fh.write(data)
        for path, tmp in temps.items():
            os.replace(tmp, path)
            placed.append(path)
    except OSError as exc:
        if placed:  # a rename failed after others went through (rare: renames need no space): undo them
            for done in placed:
                done.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror or exc} (no file of the set written)", str(path)) from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return placed


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()


def write_md_json(stem: str | Path, record: dict, markdown: str) -> Path:
    """A report pair, STEM.md and STEM.json, written together (both or neither); returns the .md path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(stem.parent)
    write_file_set({with_ext(stem, ".json"): json_bytes(record), with_ext(stem, ".md"): markdown.encode()})
    return with_ext(stem, ".md")


def file_size_mb(path: str | Path) -> float:
    """Size in MB (1e6 bytes) of a file, or of every file in a folder (an .mlpackage)."""
    path = Path(path)
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6
