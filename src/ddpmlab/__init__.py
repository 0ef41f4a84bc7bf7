"""ddpmlab: train, sample and evaluate Denoising Diffusion Probabilistic Models."""

from ddpmlab.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
