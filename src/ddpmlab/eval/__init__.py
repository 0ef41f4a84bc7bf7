"""Evaluation: feature extractors (features.py), distances (metrics.py), the FD classifier (classifier.py),
cached real-image references (reference.py), cost (speed.py) and the whole `ddpmlab eval` (run.py)."""

from ddpmlab.eval.classifier import classifier_features, load_classifier, train_classifier
from ddpmlab.eval.features import ClassifierFeatures, FeatureExtractor, InceptionFeatures, find_inception_weights
from ddpmlab.eval.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall
from ddpmlab.eval.reference import reference_features
from ddpmlab.eval.run import evaluate_real, evaluate_run
from ddpmlab.eval.speed import sampling_speed, training_cost

__all__ = [
    "ClassifierFeatures", "FeatureExtractor", "FeatureStats", "InceptionFeatures", "find_inception_weights",
    "frechet_distance", "kernel_inception_distance", "precision_recall",
    "train_classifier", "load_classifier", "classifier_features", "reference_features",
    "evaluate_run", "evaluate_real", "sampling_speed", "training_cost",
]
