"""The metrics a user names (`--metrics fd,fid,...`): one registry, METRICS, and the scores of feature sets.

Each feature metric is one function `score(real, fake, extractor_id, device) -> {result key: value}` and one
registry entry; nll and speed are measured by `ddpmlab eval` itself (they compare no features).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ddpmlab.config import DataConfig
from ddpmlab.errors import UserError
from ddpmlab.eval.classifier import check_classifier_fits, classifier_features
from ddpmlab.eval.features import FeatureExtractor, InceptionFeatures
from ddpmlab.eval.metrics import (PR_NEIGHBOURS, FeatureStats, frechet_distance, kernel_inception_distance,
                                  precision_recall)
from ddpmlab.eval.reference import feature_stats

FEATURE_BATCH = {"classifier": 500, "inception": 50}  # images per feature batch of each extractor
MIN_FID_SAMPLES = 2048  # the Inception pool3 dimension: fewer samples give a singular covariance


def fd_between(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two sets of statistics of the same extractor."""
    if a.extractor != b.extractor:
        raise ValueError(f"statistics of different extractors: {a.extractor} vs {b.extractor}")
    return frechet_distance(a.mean(), a.cov(), b.mean(), b.cov())


def frechet_score(key: str) -> Callable:
    """score() of the Fréchet distance of one extractor's features, filed under `key`."""
    def score(real: np.ndarray, fake: np.ndarray, extractor_id: str, device: torch.device) -> dict:
        return {key: fd_between(feature_stats(real, extractor_id), feature_stats(fake, extractor_id))}
    return score


def kid_score(real: np.ndarray, fake: np.ndarray, extractor_id: str, device: torch.device) -> dict:
    """KID (Bińkowski et al. 2018): the mean and standard deviation of the unbiased MMD² over subsets."""
    mean, std = kernel_inception_distance(real, fake)
    return {"kid_inception": mean, "kid_inception_std": std}


def pr_score(real: np.ndarray, fake: np.ndarray, extractor_id: str, device: torch.device) -> dict:
    """Precision and recall (Kynkäänniemi et al. 2019) on sets cut to the same size (k-NN radii depend on it)."""
    size = min(len(real), len(fake))
    if size <= PR_NEIGHBOURS:
        raise UserError(f"precision/recall need more than {PR_NEIGHBOURS} images on each side (each image's "
                        f"{PR_NEIGHBOURS}rd nearest neighbour), got {len(fake)} samples, {len(real)} real images")
    precision, recall = precision_recall(real[:size], fake[:size], device=device)
    return {"precision_inception": precision, "recall_inception": recall, "pr_n": size}


@dataclass(frozen=True)
class Metric:
    """One name of --metrics: its result keys with their labels (table, short), the extractor whose features it
    compares ("classifier", "inception"; None for nll and speed) and its score function."""

    name: str
    labels: dict[str, tuple[str, str | None]]  # result key -> (table label, short label for `pretrained list`)
    extractor: str | None = None
    score: Callable[..., dict] | None = None
    cpu_default: bool = False  # in the default --metrics on a CPU (TF-Inception runs at ~12 images/s there)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", {"fid_inception": ("FID (Inception)", "FID")}, "inception", frechet_score("fid_inception")),
    Metric("kid", {"kid_inception": ("KID (Inception)", "KID"), "kid_inception_std": ("  KID std over subsets", None)},
           "inception", kid_score),
    Metric("pr", {"precision_inception": ("precision (Inception, k=3)", "precision"),
                  "recall_inception": ("recall (Inception, k=3)", "recall"),
                  "pr_n": ("  images per set for P/R", None)}, "inception", pr_score),
    Metric("fd", {"fd_classifier": ("FD (classifier features)", "FD"),
                  "class_accuracy": ("requested class recognised (classifier)", "class accuracy"),
                  "fd_classifier_per_class": ("FD per class, mean", None)},
           "classifier", frechet_score("fd_classifier"), cpu_default=True),
    Metric("nll", {"nll_bits_per_dim": ("NLL bound (bits/dim)", "NLL bits/dim"),
                   "nll_bits_per_dim_se": ("  NLL standard error", None)}),
    Metric("speed", {"sampling_images_per_s": ("sampling (images/s)", None), "peak_memory_bytes": ("peak memory (MiB)", None),
                     "train_wall_s": ("training wall-clock (s)", None),
                     "train_images_per_s": ("training (images/s, wall-clock)", None)}, cpu_default=True),
)}
FEATURE_METRICS = tuple(name for name, m in METRICS.items() if m.extractor)  # those that compare features
INCEPTION_METRICS = tuple(name for name, m in METRICS.items() if m.extractor == "inception")
LABELS = {key: label for m in METRICS.values() for key, (label, _) in m.labels.items()}
SHORT_LABELS = {key: short for m in METRICS.values() for key, (_, short) in m.labels.items() if short}


def headline_key(name: str) -> str:
    """The result key that stands for metric `name` (its first): fd -> fd_classifier, fid -> fid_inception."""
    return next(iter(METRICS[name].labels))


def parse_metrics(text: str | None, device: torch.device, allowed=tuple(METRICS)) -> list[str]:
    """'fid,fd' -> ['fid', 'fd'] in `allowed` order; None -> the device's defaults (on a CPU the cpu_default ones, on
    a GPU all); UserError names an unknown one."""
    if text is None:
        return [m for m in allowed if device.type != "cpu" or METRICS[m].cpu_default]
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in allowed]
    if unknown or not names:
        raise UserError(f"unknown metric {', '.join(unknown) or repr(text)}; choose from {','.join(allowed)}")
    return [m for m in allowed if m in names]


def check_pr_counts(metrics: list[str], **counts: int) -> None:
    """With "pr" among `metrics`, UserError naming the first count (flag=value, "ref_n" for --ref-n) at or below
    PR_NEIGHBOURS: precision/recall measure each image's distance to its k-th nearest neighbour."""
    if "pr" not in metrics:
        return
    for name, count in counts.items():
        if count <= PR_NEIGHBOURS:
            raise UserError(f"--metrics pr needs --{name.replace('_', '-')} of at least {PR_NEIGHBOURS + 1} (precision "
                            f"and recall look at each image's {PR_NEIGHBOURS}rd nearest neighbour), got {count}")


def needed_extractors(metrics: list[str], data_cfg: DataConfig, channels: int, image_size: int,
                      classifier: str | Path | None, device: torch.device) -> tuple[dict, dict]:
    """({"classifier"|"inception": FeatureExtractor}, classifier facts), loaded before any long work so that a
    missing classifier or Inception file fails at once."""
    extractors, facts = {}, {}
    kinds = {METRICS[m].extractor for m in metrics}
    if "classifier" in kinds:
        extractors["classifier"], facts = classifier_features(classifier or data_cfg, device)
        check_classifier_fits(facts, data_cfg, channels, image_size)
    if "inception" in kinds:
        extractors["inception"] = InceptionFeatures(device=device)
    return extractors, facts


def distance_scores(metrics: list[str], extractors: dict[str, FeatureExtractor], real: dict, fake: dict,
                    device: torch.device) -> dict:
    """The requested metrics' scores of real against fake features ({extractor kind: N×D features}): the
    classifier's first, then Inception's, each in registry order."""
    scores = {}
    for kind, extractor in sorted(extractors.items(), key=lambda item: item[0] != "classifier"):
        for name in (m for m in METRICS if m in metrics and METRICS[m].extractor == kind):
            scores.update(METRICS[name].score(real[kind], fake[kind], extractor.extractor_id, device))
    return scores


def class_conditional_scores(extractor, images: torch.Tensor, labels: torch.Tensor, fake: np.ndarray,
                             real: np.ndarray, real_labels: torch.Tensor) -> dict:
    """For a conditional model: how often the dataset classifier recognises the requested class in the samples
    (`class_accuracy`), and the mean over classes of the FD between samples and real images of that class
    (`fd_classifier_per_class`; classes with fewer than 2 images on either side are skipped)."""
    predicted = extractor.predict(images)
    distances = []
    for c in labels.unique().tolist():
        fake_c, real_c = fake[(labels == c).numpy()], real[(real_labels == c).numpy()]
        if len(fake_c) >= 2 and len(real_c) >= 2:
            distances.append(fd_between(feature_stats(real_c, extractor.extractor_id),
                                        feature_stats(fake_c, extractor.extractor_id)))
    return {"class_accuracy": float((predicted == labels).float().mean()),
            "fd_classifier_per_class": float(np.mean(distances)) if distances else None}


def extractor_ids(extractors: dict[str, FeatureExtractor], scores: dict) -> dict:
    """{metric key: id of the extractor behind it}, e.g. {"fd_classifier": "classifier-...", "fid_inception": ...}."""
    kinds = {"classifier": "_classifier", "inception": "_inception"}
    return {key: extractors[kind].extractor_id for key in scores for kind, suffix in kinds.items()
            if key.endswith(suffix) and kind in extractors}
