"""Images stored as one .npy array, like the 16×16 sprites (sprites_1788_16x16.npy), with optional labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddpmlab.errors import UserError


def _load_npy(path: str) -> np.ndarray:
    try:
        array = np.load(Path(path).expanduser(), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as a .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise UserError(f"{path}: expected one array in a .npy file, not an .npz archive")
    return array


def _to_uint8(array: np.ndarray, path: str) -> np.ndarray:
    """uint8 pixels from uint8/integer arrays in [0, 255] or floats in [0, 1] or [0, 255]."""
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UserError(f"{path}: pixels must be integers or floats, found dtype {array.dtype}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise UserError(f"{path}: pixel values must lie in [0, 1] or [0, 255], found {low}..{high}")
    scale = 255.0 if np.issubdtype(array.dtype, np.floating) and high <= 1.0 else 1.0
    return np.rint(array.astype(np.float64) * scale).astype(np.uint8)


def _labels(path: str, count: int) -> tuple[np.ndarray, int]:
    """(int64 labels, number of classes) from integer labels (N,) or one-hot rows (N, K)."""
    labels = _load_npy(path)
    if labels.ndim == 2:
        labels, num_classes = labels.argmax(axis=1), labels.shape[1]
    elif labels.ndim == 1 and labels.size and np.all(np.mod(labels, 1) == 0) and labels.min() >= 0:
        labels = labels.astype(np.int64)
        num_classes = int(labels.max()) + 1
    else:
        raise UserError(f"{path}: labels must be non-negative integers (N,) or one-hot (N, K), "
                        f"found shape {labels.shape} dtype {labels.dtype}")
    if len(labels) != count:
        raise UserError(f"{path} holds {len(labels)} labels for {count} images")
    return labels.astype(np.int64), num_classes


def load_array(path: str, labels_path: str | None) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """(uint8 N×C×H×W images, int64 labels or None, class names "0".."K-1" or None) from N×H×W×C .npy files."""
    array = _load_npy(path)
    if array.ndim != 4 or array.shape[1] != array.shape[2] or array.shape[3] not in (1, 3):
        raise UserError(f"{path}: expected square images N×H×W×C with C 1 or 3 (like N×16×16×3), "
                        f"found shape {array.shape}")
    images = torch.from_numpy(np.ascontiguousarray(_to_uint8(array, path).transpose(0, 3, 1, 2)))
    if labels_path is None:
        return images, None, None
    labels, num_classes = _labels(labels_path, len(images))
    return images, torch.from_numpy(labels), [str(k) for k in range(num_classes)]
