"""Networks: the DDPM U-Net and its building blocks."""

from ddpmlab.nets.unet import UNet, UNetSpec

__all__ = ["UNet", "UNetSpec"]
