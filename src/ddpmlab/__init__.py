"""ddpmlab: train, sample and evaluate Denoising Diffusion Probabilistic Models."""

from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.version import __version__

__all__ = ["DdpmlabWarning", "UserError", "__version__"]
