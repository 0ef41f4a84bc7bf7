"""Evaluation: feature extractors (features.py) and the distances between feature sets (metrics.py)."""

from ddpmlab.eval.features import ClassifierFeatures, FeatureExtractor, InceptionFeatures, find_inception_weights
from ddpmlab.eval.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall

__all__ = [
    "ClassifierFeatures", "FeatureExtractor", "FeatureStats", "InceptionFeatures", "find_inception_weights",
    "frechet_distance", "kernel_inception_distance", "precision_recall",
]
