"""The public API: registry, train/val/test splits, limit, resizing, model batches with flips."""

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import DATASETS, DataConfig
from ddpmlab.data import dataset_names, load_dataset, resize, to_model_batch


def synthetic(**overrides) -> DataConfig:
    return DataConfig(name="synthetic", **overrides)


def test_every_configured_dataset_has_a_source():
    assert dataset_names() == list(DATASETS)


def test_train_and_val_are_disjoint_stable_and_complete():
    everything = load_dataset(synthetic(val_fraction=0.0)).images
    train, val = load_dataset(synthetic()), load_dataset(synthetic(), "val")
    assert (len(everything), len(train), len(val)) == (2048, 2007, 41)  # round(0.02 · 2048) = 41
    rows = {image.numpy().tobytes(): i for i, image in enumerate(everything)}
    train_rows = [rows[image.numpy().tobytes()] for image in train.images]
    val_rows = [rows[image.numpy().tobytes()] for image in val.images]
    assert sorted(train_rows + val_rows) == list(range(2048))
    assert train_rows == sorted(train_rows) and val_rows == sorted(val_rows)
    assert torch.equal(load_dataset(synthetic(), "val").images, val.images)


def test_held_out_images_do_not_depend_on_the_training_seed_or_global_rng():
    first = load_dataset(synthetic(), "val").labels
    torch.manual_seed(99)
    assert torch.equal(load_dataset(synthetic(), "val").labels, first)


def test_limit_keeps_the_first_training_images_only():
    train = load_dataset(synthetic())
    limited = load_dataset(synthetic(limit=10))
    assert len(limited) == 10 and torch.equal(limited.images, train.images[:10])
    assert torch.equal(limited.labels, train.labels[:10])
    assert len(load_dataset(synthetic(limit=10), "val")) == 41


def test_val_needs_a_positive_fraction():
    with pytest.raises(UserError, match="val_fraction is 0"):
        load_dataset(synthetic(val_fraction=0.0), "val")


@pytest.mark.parametrize("split", ["valid", "training"])
def test_unknown_split(split):
    with pytest.raises(UserError, match=f"unknown split '{split}'"):
        load_dataset(synthetic(), split)


def test_synthetic_has_no_test_split():
    with pytest.raises(UserError, match="synthetic has no test split"):
        load_dataset(synthetic(), "test")


def test_image_size_resizes_with_antialiasing():
    data = load_dataset(synthetic(synthetic_size=16, image_size=8, synthetic_count=64, val_fraction=0.0))
    assert data.images.shape == (64, 3, 8, 8) and data.image_size == 8 and data.images.dtype == torch.uint8
    halves = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    halves[..., 8:] = 200
    row = resize(halves, 8)[0, 0, 0].tolist()
    assert row[:3] == [0, 0, 0] and row[5:] == [200, 200, 200]
    assert 0 < row[3] < row[4] < 200  # the edge blends
    assert row[3] + row[4] == 200  # symmetric about the edge
    assert resize(torch.full((2, 3, 10, 10), 37, dtype=torch.uint8), 4).unique().tolist() == [37]


def test_model_batch_maps_levels_to_minus_one_one():
    levels = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 5)
    batch = to_model_batch(levels, random_flip=False, generator=None)
    assert batch.dtype == torch.float32
    assert batch.flatten().tolist() == pytest.approx([-1.0, 1 / 127.5 - 1, 127 / 127.5 - 1, 128 / 127.5 - 1, 1.0], abs=1e-6)


def test_flips_are_exact_mirrors_drawn_from_the_generator():
    images = torch.randint(0, 256, (1000, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    plain = to_model_batch(images, random_flip=False, generator=None)
    flipped = to_model_batch(images, random_flip=True, generator=torch.Generator().manual_seed(7))
    again = to_model_batch(images, random_flip=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(flipped, again)
    is_mirror = (flipped == plain.flip(-1)).flatten(1).all(1)
    is_same = (flipped == plain).flatten(1).all(1)
    assert torch.all(is_mirror ^ is_same)  # every image is either untouched or exactly mirrored
    assert torch.equal(is_mirror, torch.rand(1000, generator=torch.Generator().manual_seed(7)) < 0.5)
    assert 450 < is_mirror.sum() < 550
