"""edgefa: 3D face alignment models from training to device files."""
__version__ = "0.1.0"

__all__ = ["FaceAligner", "Face"]


def __getattr__(name: str):
    # `from edgefa import FaceAligner` without importing the runtime (or anything) at `import edgefa`
    if name in __all__:
        from edgefa import align

        return getattr(align, name)
    raise AttributeError(f"module 'edgefa' has no attribute {name!r}")
