"""The metrics in one place: sample-quality distances between feature sets, and (later) likelihood."""

from ddpmlab.eval.metrics import FeatureStats
from ddpmlab.eval.metrics import frechet_distance
from ddpmlab.eval.metrics import kernel_inception_distance
from ddpmlab.eval.metrics import precision_recall

# Likelihood: nll_bits_per_dim (from ddpmlab.diffusion.nll) goes here.

__all__ = ["FeatureStats", "frechet_distance", "kernel_inception_distance", "precision_recall"]
