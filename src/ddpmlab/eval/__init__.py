"""Measurement only: feature extractors (features.py), distances (metrics.py), the metrics registry (scores.py), the
FD classifier (classifier.py), cached real-image references (reference.py), samples (samples.py), cost (speed.py),
evaluation during training (during_training.py) and a sampler sweep's SPEC (sweep.py)."""

from ddpmlab.eval.classifier import classifier_features, load_classifier, train_classifier
from ddpmlab.eval.features import ClassifierFeatures, FeatureExtractor, InceptionFeatures, find_inception_weights
from ddpmlab.eval.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall
from ddpmlab.eval.reference import reference_features
from ddpmlab.eval.speed import sampling_speed, training_cost

__all__ = [
    "ClassifierFeatures", "FeatureExtractor", "FeatureStats", "InceptionFeatures", "find_inception_weights",
    "frechet_distance", "kernel_inception_distance", "precision_recall",
    "train_classifier", "load_classifier", "classifier_features", "reference_features",
    "sampling_speed", "training_cost",
]
