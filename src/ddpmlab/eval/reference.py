"""Reference features of real images, per dataset, split and extractor, cached on disk and reused.

One .npz per (images, split, extractor, count) in <cache>/stats/ holds the features themselves (KID
and precision/recall need them) and their FeatureStats sums (FD/FID need only those), with the
extractor id, the count and the images' identity, all checked before a file is reused.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.eval.cache import cache_dir, dataset_key, images_identity
from ddpmlab.eval.features import FeatureExtractor
from ddpmlab.eval.metrics import FeatureStats

SUBSET_SEED = 0
FORMAT = "ddpmlab-reference-1"


def subset_indices(count: int, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Sorted int64 indices of min(n, count) images drawn without replacement by a fixed-seed permutation.

    Not simply the first n: folder datasets are ordered by class.
    """
    if n >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def reference_path(data_cfg: DataConfig, split: str, extractor_id: str, count: int) -> Path:
    """<cache>/stats/<dataset>-<split>-<extractor id>-<count>.npz"""
    return cache_dir("stats", f"{dataset_key(data_cfg, split)}-{split}-{extractor_id}-{count}.npz")


def feature_stats(features: np.ndarray, extractor_id: str) -> FeatureStats:
    """FeatureStats of N×D `features`, named by `extractor_id`."""
    return FeatureStats(extractor_id).update(features)


def _write_atomically(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_reference(path: Path, features: np.ndarray, stats: FeatureStats, identity: dict) -> Path:
    """Write features, their statistics and the images' identity to `path` (no pickles)."""
    _write_atomically(Path(path), {"format": np.str_(FORMAT), "features": features.astype(np.float32),
                                   "count": np.int64(stats.count), "sum": stats.sum, "sum_outer": stats.sum_outer,
                                   "extractor": np.str_(stats.extractor), "identity": np.str_(json.dumps(identity))})
    return Path(path)


def load_reference(path: Path, extractor_id: str, count: int, identity: dict) -> tuple[np.ndarray, FeatureStats] | None:
    """(features, stats) stored at `path` if it exists and matches extractor, count and identity; else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if (str(data["format"]) != FORMAT or str(data["extractor"]) != extractor_id or int(data["count"]) != count
                    or json.loads(str(data["identity"])) != identity):
                return None
            features = data["features"]
            stats = FeatureStats.from_dict({key: data[key] for key in ("count", "sum", "sum_outer", "extractor")})
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile):  # absent or unreadable (a pickle
        # is refused, never loaded): recompute and overwrite
        return None
    return (features, stats) if features.shape[0] == count else None


def reference_features(data_cfg: DataConfig, split: str, extractor: FeatureExtractor, n: int,
                       batch_size: int = 100, progress: bool = True) -> tuple[np.ndarray, FeatureStats, dict]:
    """(float32 count×D features, their FeatureStats, info) of min(n, split size) real images of `split`.

    Read from the cache when a matching file exists, else extracted and cached. info: path, count,
    cached (True when read from disk), split, dataset_key.
    """
    images = load_dataset(data_cfg, split).images
    index = subset_indices(len(images), n)
    identity = {**images_identity(data_cfg, split), "split": split, "subset_seed": SUBSET_SEED}
    path = reference_path(data_cfg, split, extractor.extractor_id, len(index))
    info = {"path": str(path), "count": len(index), "split": split, "dataset_key": dataset_key(data_cfg, split)}
    if (cached := load_reference(path, extractor.extractor_id, len(index), identity)) is not None:
        return *cached, {**info, "cached": True}
    features = extractor.extract(images[index], batch_size=batch_size, progress=progress)
    stats = feature_stats(features, extractor.extractor_id)
    save_reference(path, features, stats, identity)
    return features, stats, {**info, "cached": False}
