"""The layering in ARCHITECTURE.md, checked on every import in the tree (inside functions too)."""
from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN_CARD_FOLDERS = ("training", "quantization", "converters", "benchmarks")


def read_setuptools(root: Path = ROOT) -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders(root: Path = ROOT) -> dict[str, str]:
    """{folder at the repository root: the package it installs as}, from pyproject's package-dir."""
    mapped = {folder: package for package, folder in read_setuptools(root).get("package-dir", {}).items()}
    return {"edgefa": "edgefa", **mapped}


def read_layers(text: str) -> dict[str, int]:
    """{module prefix: layer} from the ```layers block of ARCHITECTURE.md."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    if block is None:
        raise ValueError("ARCHITECTURE.md has no ```layers block")
    layers = {}
    for line in block.group(1).strip().splitlines():
        head, _, names = line.partition(":")
        for name in names.split():
            layers[name] = int(head.split()[0])
    return layers


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    owners = [p for p in layers if module == p or module.startswith(p + ".")]
    return layers[max(owners, key=len)] if owners else None


def module_files(root: Path = ROOT, folders: dict[str, str] | None = None) -> dict[str, Path]:
    """{module name as installed: file}; ``training/trainer.py`` is ``edgefa.training.trainer``."""
    out = {}
    for folder, package in (folders or package_folders(root)).items():
        for path in (root / folder).rglob("*.py"):
            if ".venv" in path.parts:
                continue
            name = ".".join([package, *path.relative_to(root / folder).with_suffix("").parts])
            out[name.removesuffix(".__init__")] = path
    return out


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """Every module name an import statement, ``importlib.import_module("x")`` or ``__import__("x")`` names."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            yield node.args[0].value


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the project modules it imports}; ``from a import b`` counts ``a.b`` when that is a module."""
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in _imported_names(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            if name in files:
                targets.add(name)
            elif name.rpartition(".")[0] in files:
                targets.add(name.rpartition(".")[0])  # `from pkg.mod import function`
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def tree():
    layers = read_layers((ROOT / "ARCHITECTURE.md").read_text())
    files = module_files()
    return layers, files, import_graph(files)


def test_every_module_has_a_layer(tree):
    layers, files, _ = tree
    assert [m for m in files if layer_of(m, layers) is None] == []


def test_no_module_imports_a_higher_layer(tree):
    layers, _, graph = tree
    upward = sorted(f"{a} (layer {layer_of(a, layers)}) -> {b} (layer {layer_of(b, layers)})"
                    for a, targets in graph.items() for b in targets if layer_of(b, layers) > layer_of(a, layers))
    assert upward == []


def test_no_import_cycles(tree):
    assert cycles(tree[2]) == []


def test_the_checks_see_what_they_claim(tmp_path):
    """The checker finds an upward import hidden in a function, a relative import, a string import
    and a two-module cycle, so an empty answer above means something."""
    (tmp_path / "edgefa" / "sub").mkdir(parents=True)
    (tmp_path / "training").mkdir()
    (tmp_path / "edgefa" / "__init__.py").write_text("")
    (tmp_path / "edgefa" / "sub" / "__init__.py").write_text("")
    (tmp_path / "edgefa" / "sub" / "a.py").write_text("def f():\n    from edgefa.training.t import g\n")
    (tmp_path / "edgefa" / "sub" / "b.py").write_text("from . import c\n")
    (tmp_path / "edgefa" / "sub" / "c.py").write_text("import importlib\nimportlib.import_module('edgefa.sub.b')\n")
    (tmp_path / "training" / "t.py").write_text("def g():\n    pass\n")
    layers = read_layers("```layers\n0 core: edgefa\n1 libraries: edgefa.training\n```")
    graph = import_graph(module_files(tmp_path, {"edgefa": "edgefa", "training": "edgefa.training"}))
    assert graph["edgefa.sub.a"] == {"edgefa.training.t"}
    assert layer_of("edgefa.training.t", layers) > layer_of("edgefa.sub.a", layers)
    assert cycles(graph) == [["edgefa.sub.b", "edgefa.sub.c"]]


def test_ruff_is_clean():
    """The lint rules in pyproject.toml ([tool.ruff]) hold on the whole tree."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_installed_packages_are_the_tree():
    """pyproject's package list is every package in the tree, under its installed name, and the
    design card's folders all install under ``edgefa.``, so nothing generic lands in site-packages."""
    setuptools_cfg = read_setuptools()
    folders = package_folders()
    assert set(DESIGN_CARD_FOLDERS) <= set(folders)
    assert all(package.startswith("edgefa.") for folder, package in folders.items() if folder != "edgefa")
    in_tree = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert sorted(setuptools_cfg["packages"]) == sorted(in_tree)


def test_source_tree_resolves_installed_names(tmp_path):
    """Without an install (no .pth, no editable finder: ``-S``), the repository root on the path is
    enough for ``edgefa.training`` and the rest, as on the GPU box (``PYTHONPATH=.``)."""
    code = ("import edgefa.training, edgefa.quantization, edgefa.converters, edgefa.benchmarks, sys; "
            "print(edgefa.training.__file__); print('training' in sys.modules)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.split()
    assert Path(first) == ROOT / "training" / "__init__.py" and second == "False"


def test_wheel_installs_one_top_level_name(tmp_path):
    """The wheel holds ``edgefa`` only (plus its metadata), with the mapped folders and their data inside."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    src = tmp_path / "src"
    names = ["pyproject.toml", "README.md", "edgefa", *DESIGN_CARD_FOLDERS]
    for name in names:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edgefa-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
    assert {m.split("/")[0] for m in members if not m.split("/")[0].endswith(".dist-info")} == {"edgefa"}
    for expected in ("edgefa/training/trainer.py", "edgefa/benchmarks/templates/report.html.j2",
                     "edgefa/training/configs/mobilenetv3-small.yaml", "edgefa/converters/to_onnx.py",
                     "edgefa/quantization/qat.py", "edgefa/weights/mobilenetv3_small_100.safetensors"):
        assert expected in members
