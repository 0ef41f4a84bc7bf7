"""Procedural shapes: determinism, two colours per image, shape areas, speed."""

import math
import time

import numpy as np
import pytest
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.data.synthetic import SHAPES, _shape_masks, synthetic_shapes


def test_same_config_gives_identical_tensors():
    cfg = DataConfig(name="synthetic", synthetic_count=256, synthetic_size=16, synthetic_channels=3)
    first, second = load_dataset(cfg), load_dataset(cfg)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.images.shape == (251, 3, 16, 16) and first.images.dtype == torch.uint8  # 256 minus 5 held out
    assert (first.num_classes, first.class_names) == (4, ["disc", "square", "triangle", "diamond"])


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_is_one_shape_on_a_contrasting_background(channels):
    images, labels, _ = synthetic_shapes(200, 16, channels)
    assert images.shape == (200, channels, 16, 16)
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}
    for image in images:
        colours = image.reshape(channels, -1).T.unique(dim=0)
        assert len(colours) == 2  # background and shape, both present
        circular_gap = (colours[0].int() - colours[1].int()).abs().remainder(256)
        assert torch.minimum(circular_gap, 256 - circular_gap).max() >= 64


def test_shape_areas_match_their_formulas():
    size, radius = 200, 60.3  # off the pixel lattice
    centres = np.arange(size) + 0.5 - size / 2
    masks = _shape_masks(centres[None, None, :], centres[None, :, None], np.full((1, 1, 1), radius))[0]
    areas = dict(zip(SHAPES, masks.sum(axis=(1, 2)).tolist()))
    assert areas["disc"] == pytest.approx(math.pi * radius**2, rel=0.01)
    assert areas["square"] == pytest.approx((1.6 * radius) ** 2, rel=0.01)
    assert areas["triangle"] == pytest.approx(2 * radius**2, rel=0.01)  # base 2r, height 2r
    assert areas["diamond"] == pytest.approx(2 * radius**2, rel=0.01)


def test_two_thousand_images_take_well_under_a_second():
    start = time.perf_counter()
    synthetic_shapes(2048, 16, 3)
    assert time.perf_counter() - start < 0.5
