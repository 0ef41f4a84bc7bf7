"""ddpmlab: train, sample and evaluate Denoising Diffusion Probabilistic Models.

`ddpmlab.load(source)` returns a ddpmlab.pipeline.Pipeline (imported on first use, so that `import ddpmlab` stays
light)."""

from ddpmlab.errors import DdpmlabNote, DdpmlabWarning, UserError
from ddpmlab.version import __version__

__all__ = ["DdpmlabNote", "DdpmlabWarning", "UserError", "__version__", "load", "Pipeline"]


def __getattr__(name: str):
    if name in ("load", "Pipeline"):
        from ddpmlab import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ddpmlab' has no attribute {name!r}")
