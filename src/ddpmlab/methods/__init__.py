"""Generative methods behind one interface (methods.base): the baselines VAE, DCGAN and VAE-GAN."""

from ddpmlab.methods.base import BaselineNet, Phase
from ddpmlab.methods.dcgan import DCGAN, DCGANSpec
from ddpmlab.methods.vae import VAE, VAESpec, gaussian_kl, gaussian_nll
from ddpmlab.methods.vaegan import VAEGAN, VAEGANSpec

BASELINES = {"vae": VAE, "dcgan": DCGAN, "vaegan": VAEGAN}  # name -> class; each has from_spec, DEFAULT_LR, DEFAULT_BETAS

__all__ = ["BASELINES", "BaselineNet", "Phase", "VAE", "VAESpec", "DCGAN", "DCGANSpec", "VAEGAN", "VAEGANSpec",
           "gaussian_kl", "gaussian_nll"]
