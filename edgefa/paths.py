"""Where edgefa looks for the shared data (real datasets, BFM, peers); never inside the repo."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from edgefa.errors import EdgefaError

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """``$EDGEFA_SHARED``, else ``../shared`` beside the repository."""
    env = os.environ.get("EDGEFA_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def fill_shared(value):
    """``{shared}`` in a spec (or in each spec of a list) -> the shared data folder; None / false stay."""
    if not value:
        return value
    if isinstance(value, list):
        return [fill_shared(v) for v in value]
    return str(value).replace("{shared}", str(shared_root()))


def unfill_shared(value):
    """The inverse of ``fill_shared``: the shared folder's path -> ``{shared}`` where a spec names it
    (``KIND:PATH,...``, ``PATH``), so a spec recorded in a checkpoint still resolves on a machine whose
    shared data lives elsewhere (trained on an upload to a GPU box, compressed on a laptop)."""
    import re

    if not value:
        return value
    if isinstance(value, list):
        return [unfill_shared(v) for v in value]
    root = re.escape(str(shared_root()))
    return re.sub(rf"(^|:){root}(?=/|,|$)", lambda m: m.group(1) + "{shared}", str(value))


def find_bfm68(explicit: str | Path | None = None, near: Path | None = None) -> Path:
    """The bfm68 folder: an explicit path, ``$EDGEFA_BFM68``, or the shared layout."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("EDGEFA_BFM68")
    if env:
        return Path(env)
    candidates = [shared_root() / "data" / "bfm68"]
    if near is not None:  # peers/<model>/file.pth sits two levels below shared/
        candidates.insert(0, Path(near).resolve().parent.parent.parent / "data" / "bfm68")
    for cand in candidates:
        if (cand / "u_base.txt").is_file():
            return cand
    raise EdgefaError("bfm68 face model not found: pass bfm=DIR in the model spec or set EDGEFA_BFM68 "
                      "(a folder with u_base.txt, w_shp_base.txt, w_exp_base.txt)")


def portable(value: str) -> str:
    """No machine paths in a device file or a report: the shared folder -> {shared}, the repo -> relative,
    any other absolute path -> its last two parts."""
    value = value.replace(str(shared_root()), "{shared}").replace(str(REPO_ROOT) + "/", "")
    return re.sub(r"(?<![\w.{}])/(?:[^/,:\"\s]+/)*([^/,:\"\s]+/[^/,:\"\s]+)", r".../\1", value)


def shell_command(argv) -> str:
    """A command as a report prints it: shell-quoted so it pastes back as it ran (overrides hold
    quotes and brackets), with this repository's and the shared folder's absolute paths written
    relative to the repository root, where its commands are run from."""
    root, shared = str(REPO_ROOT), str(shared_root())

    def relative(arg: str) -> str:
        return str(arg).replace(shared, os.path.relpath(shared, root)).replace(root + "/", "")

    return shlex.join(relative(a) for a in argv)
