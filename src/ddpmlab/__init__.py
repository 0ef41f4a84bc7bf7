"""ddpmlab: train, sample and evaluate Denoising Diffusion Probabilistic Models."""

from ddpmlab.errors import DdpmlabWarning, UserError

__version__ = "0.1.0"
__all__ = ["DdpmlabWarning", "UserError", "__version__"]
