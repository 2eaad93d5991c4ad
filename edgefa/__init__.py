"""edgefa: 3D face alignment models from training to device files."""
import os as _os

__version__ = "0.1.0"

__all__ = ["FaceAligner", "Face"]

# The design card keeps training/, quantization/, converters/ and benchmarks/ at the repository
# root; installed, they are edgefa.training etc. (pyproject's package-dir). Run from a source tree
# without an install (PYTHONPATH=., as on the GPU box), the root joins this package's own search
# path so the same names resolve; an installed copy has no such folders beside it.
_SOURCE_FOLDERS = ("training", "quantization", "converters", "benchmarks")
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and all(
        _os.path.isfile(_os.path.join(_root, name, "__init__.py")) for name in _SOURCE_FOLDERS):
    __path__.append(_root)


def __getattr__(name: str):
    # `from edgefa import FaceAligner` without importing the runtime (or anything) at `import edgefa`
    if name in __all__:
        from edgefa import align

        return getattr(align, name)
    raise AttributeError(f"module 'edgefa' has no attribute {name!r}")
