"""Networks: the DDPM U-Net and its building blocks, and the small classifier behind the FD metric."""

from ddpmlab.nets.classifier import Classifier, ClassifierSpec
from ddpmlab.nets.unet import UNet, UNetSpec

__all__ = ["UNet", "UNetSpec", "Classifier", "ClassifierSpec"]
