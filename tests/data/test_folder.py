"""Folders of image files: class subfolders, grayscale vs RGB, sizes, resizing."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset


def save(path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def folder_cfg(tmp_path, **overrides) -> DataConfig:
    return DataConfig(name="folder", path=str(tmp_path), val_fraction=0.0, **overrides)


def test_class_subfolders_in_sorted_order(tmp_path):
    rng = np.random.default_rng(0)
    cat = save(tmp_path / "cats" / "a.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    dog1 = save(tmp_path / "dogs" / "1.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    dog2 = save(tmp_path / "dogs" / "deeper" / "2.PNG", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    data = load_dataset(folder_cfg(tmp_path))
    assert (data.class_names, data.num_classes, data.labels.tolist()) == (["cats", "dogs"], 2, [0, 1, 1])
    expected = torch.from_numpy(np.stack([cat, dog1, dog2])).permute(0, 3, 1, 2)
    assert data.images.shape == (3, 3, 8, 8) and torch.equal(data.images, expected)  # PNG is lossless


def test_flat_grayscale_folder_is_unlabelled_one_channel(tmp_path):
    save(tmp_path / "b.png", np.full((6, 6), 200, np.uint8))
    save(tmp_path / "a.png", np.full((6, 6), 10, np.uint8))
    data = load_dataset(folder_cfg(tmp_path))
    assert (data.labels, data.num_classes, data.channels) == (None, 0, 1)
    assert data.images[:, 0, 0, 0].tolist() == [10, 200]  # sorted by path


def test_mixed_grayscale_and_colour_become_rgb(tmp_path):
    save(tmp_path / "a.png", np.full((4, 4), 77, np.uint8))
    save(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    data = load_dataset(folder_cfg(tmp_path))
    assert data.channels == 3 and data.images[0, :, 0, 0].tolist() == [77, 77, 77]


def test_different_sizes_need_image_size(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "b.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(UserError, match="images differ in size.*data.image_size"):
        load_dataset(folder_cfg(tmp_path))


def test_image_size_centre_crops_and_resizes(tmp_path):
    wide = np.zeros((8, 12, 3), np.uint8)
    wide[:, 2:10] = 90  # the centre 8×8 square
    save(tmp_path / "wide.png", wide)
    save(tmp_path / "small.png", np.full((2, 2, 3), 30, np.uint8))
    data = load_dataset(folder_cfg(tmp_path, image_size=4))
    assert data.images.shape == (2, 3, 4, 4)
    assert data.images[0].unique().tolist() == [30]  # small.png, upsampled
    assert data.images[1].unique().tolist() == [90]  # wide.png: only its centre square survives


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images"):
        load_dataset(folder_cfg(tmp_path))


def test_folder_has_no_test_split(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="folder has no test split"):
        load_dataset(folder_cfg(tmp_path), "test")
