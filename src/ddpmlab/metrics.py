"""The metrics in one place: sample-quality distances between feature sets, and the likelihood bound."""

from ddpmlab.diffusion.nll import nll_bits_per_dim
from ddpmlab.eval.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall

__all__ = ["FeatureStats", "frechet_distance", "kernel_inception_distance", "precision_recall", "nll_bits_per_dim"]
