"""Sprites-style .npy arrays: N×H×W×C pixels, integer or one-hot labels, mismatches named."""

import numpy as np
import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset


def sprites(tmp_path, images: np.ndarray, labels: np.ndarray | None = None, **overrides) -> DataConfig:
    """A sprites config over `images` (and `labels`) saved as .npy files in tmp_path."""
    np.save(tmp_path / "sprites.npy", images)
    labels_path = None
    if labels is not None:
        np.save(tmp_path / "labels.npy", labels)
        labels_path = str(tmp_path / "labels.npy")
    return DataConfig(name="sprites", path=str(tmp_path / "sprites.npy"), labels_path=labels_path,
                      val_fraction=0.0, **overrides)


def test_nhwc_uint8_with_one_hot_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    one_hot = np.eye(5, dtype=np.float64)[[4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]]  # as sprite_labels_nc_1788_16x16.npy
    data = load_dataset(sprites(tmp_path, images, one_hot))
    assert data.images.shape == (12, 3, 16, 16) and data.images.is_contiguous()
    assert torch.equal(data.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert data.images[3, 2, 5, 7] == images[3, 5, 7, 2]
    assert data.labels.tolist() == [4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]
    assert (data.num_classes, data.class_names) == (5, ["0", "1", "2", "3", "4"])


def test_integer_labels_and_grayscale(tmp_path):
    images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
    data = load_dataset(sprites(tmp_path, images, np.array([2, 0, 2, 1])))
    assert (data.channels, data.image_size) == (1, 8)
    assert data.images[1, 0, 2, 3].item() == 64 + 2 * 8 + 3
    assert (data.labels.tolist(), data.labels.dtype, data.num_classes) == ([2, 0, 2, 1], torch.int64, 3)


def test_unlabelled(tmp_path):
    data = load_dataset(sprites(tmp_path, np.zeros((3, 4, 4, 3), np.uint8)))
    assert (data.labels, data.num_classes, data.class_names) == (None, 0, None)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_pixels_in_unit_or_byte_range(tmp_path, scale):
    levels = np.array([0, 1, 127, 128, 254, 255], dtype=np.float32)
    images = np.broadcast_to(levels[:, None, None, None] / 255 * scale, (6, 4, 4, 3)).copy()
    data = load_dataset(sprites(tmp_path, images))
    assert data.images[:, 0, 0, 0].tolist() == [0, 1, 127, 128, 254, 255]


def test_labels_count_must_match(tmp_path):
    cfg = sprites(tmp_path, np.zeros((5, 4, 4, 3), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(UserError, match="labels.npy holds 4 labels for 5 images"):
        load_dataset(cfg)


def test_non_square_or_channel_last_mismatch_is_named(tmp_path):
    with pytest.raises(UserError, match=r"sprites.npy: expected square images .* found shape \(5, 3, 16, 16\)"):
        load_dataset(sprites(tmp_path, np.zeros((5, 3, 16, 16), np.uint8)))


def test_object_arrays_are_not_unpickled(tmp_path):
    with pytest.raises(UserError, match="sprites.npy: cannot read"):
        load_dataset(sprites(tmp_path, np.array([None, {"a": 1}], dtype=object)))
