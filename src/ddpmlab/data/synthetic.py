"""Procedural images, no files: one filled shape of random position, size and colour on a plain background."""

from __future__ import annotations

import numpy as np
import torch

SHAPES = ["disc", "square", "triangle", "diamond"]


def _shape_masks(dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Boolean N×len(SHAPES)×S×S: which pixels each shape covers, given offsets from its centre (y down)."""
    triangle = (dy >= -radius) & (dy <= radius) & (2 * np.abs(dx) <= dy + radius)  # apex up, base 2·radius wide
    return np.stack([dx**2 + dy**2 <= radius**2,
                     np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * radius,
                     triangle,
                     np.abs(dx) + np.abs(dy) <= radius], axis=1)


def synthetic_shapes(count: int, size: int, channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 count×channels×size×size images, int64 shape labels, SHAPES); the same arguments give the same tensors."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(SHAPES), size=count)
    centre = rng.uniform(0.3 * size, 0.7 * size, size=(2, count, 1, 1))
    radius = rng.uniform(0.15 * size, 0.3 * size, size=(count, 1, 1))
    background = rng.integers(256, size=(count, channels))
    # a per-channel offset of 64..191 (mod 256) keeps every shape at least 64 levels from its background
    foreground = (background + rng.integers(64, 192, size=(count, channels))) % 256

    pixel_centres = np.arange(size) + 0.5
    dx = pixel_centres[None, None, :] - centre[0]
    dy = pixel_centres[None, :, None] - centre[1]
    mask = _shape_masks(dx, dy, radius)[np.arange(count), labels]
    images = np.where(mask[:, None], foreground[:, :, None, None], background[:, :, None, None])
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64)), list(SHAPES)
