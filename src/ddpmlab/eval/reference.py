"""Reference features of real images, per dataset, split and extractor, cached on disk and reused.

One .npz per (images, split, extractor, count) in <cache>/stats/ holds the features themselves (KID
and precision/recall need them) and their FeatureStats sums (FD/FID need only those), with the
extractor id, the count and the images' identity, all checked before a file is reused, and the SHA-256 of all of
it: a damaged file (truncated, bits flipped) is recomputed, with a note on stderr.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.errors import DdpmlabNote
from ddpmlab.eval.cache import cache_dir, dataset_key, images_identity, images_sha256
from ddpmlab.eval.features import FeatureExtractor
from ddpmlab.eval.metrics import FeatureStats
from ddpmlab.paths import atomic_write_bytes

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


def content_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and bytes of `arrays`, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape}:".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save_reference(path: Path, features: np.ndarray, stats: FeatureStats, identity: dict) -> Path:
    """Write features, their statistics, the images' identity and the SHA-256 of all of them to `path`, atomically
    (no pickles)."""
    arrays = {"format": np.str_(FORMAT), "features": features.astype(np.float32), "count": np.int64(stats.count),
              "sum": stats.sum, "sum_outer": stats.sum_outer, "extractor": np.str_(stats.extractor),
              "identity": np.str_(json.dumps(identity))}
    encoded = io.BytesIO()
    np.savez(encoded, **arrays, sha256=np.str_(content_checksum(arrays)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), encoded.getvalue())
    return Path(path)


def load_reference(path: Path, extractor_id: str, count: int, identity: dict) -> tuple[np.ndarray, FeatureStats] | None:
    """(features, stats) stored at `path` if it exists, is intact and matches extractor, count and identity; else None
    (then the caller recomputes and overwrites it). A damaged file, unreadable or not matching its recorded SHA-256
    (files written before checksums have none and are only read), is noted on stderr."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return _damaged(path, f"unreadable: {str(exc).splitlines()[0][:80] or exc.__class__.__name__}")
    recorded = arrays.pop("sha256", None)
    if recorded is not None and str(recorded) != content_checksum(arrays):
        return _damaged(path, "its SHA-256 differs from the one recorded when it was written")
    try:
        if (str(arrays["format"]) != FORMAT or str(arrays["extractor"]) != extractor_id
                or int(arrays["count"]) != count or json.loads(str(arrays["identity"])) != identity):
            return None
        features = arrays["features"]
        stats = FeatureStats.from_dict({key: arrays[key] for key in ("count", "sum", "sum_outer", "extractor")})
    except (KeyError, ValueError, TypeError):  # another layout: recompute and overwrite
        return None
    return (features, stats) if features.shape[0] == count else None


def _damaged(path: Path, why: str) -> None:
    warnings.warn(f"the cached reference statistics {path} are damaged ({why}); recomputing them", DdpmlabNote,
                  stacklevel=3)
    return None


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


def images_features(images: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 100,
                    progress: bool = True) -> tuple[np.ndarray, FeatureStats, dict]:
    """(float32 N×D features, their FeatureStats, info) of all of uint8 N×C×H×W `images` that no dataset config
    names (a .npz, a folder of files): cached like a dataset's, keyed on the images' SHA-256 (eval.cache.images_sha256).
    info: path, count, cached, sha256."""
    digest = images_sha256(images)
    identity = {"sha256": digest, "shape": list(images.shape)}
    path = cache_dir("stats", f"images-{digest[:16]}-{extractor.extractor_id}-{len(images)}.npz")
    info = {"path": str(path), "count": len(images), "sha256": digest}
    if (cached := load_reference(path, extractor.extractor_id, len(images), identity)) is not None:
        return *cached, {**info, "cached": True}
    features = extractor.extract(images, batch_size=batch_size, progress=progress)
    stats = feature_stats(features, extractor.extractor_id)
    save_reference(path, features, stats, identity)
    return features, stats, {**info, "cached": False}
