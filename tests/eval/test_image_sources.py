"""Images no model draws: a .npz, a folder, a dataset split; read the same whichever form, cached by content."""

import numpy as np
import pytest
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.errors import UserError
from ddpmlab.eval.cache import images_sha256
from ddpmlab.eval.classifier import classifier_features
from ddpmlab.eval.image_sources import (dataset_split, describe, image_source, model_reference, read_images,
                                        read_npz_images, reference_data)
from ddpmlab.eval.reference import images_features, subset_indices
from ddpmlab.images import save_images


@pytest.fixture
def images(tiny_data):
    """32 uint8 3×16×16 images of the tiny preset's synthetic shapes."""
    return load_dataset(tiny_data, "train").images[:32]


def save_npz(path, images, key="images"):
    np.savez(path, **{key: images.permute(0, 2, 3, 1).numpy()})
    return path


def test_each_form_is_recognised_and_checked(tmp_path, images):
    npz, folder = save_npz(tmp_path / "s.npz", images), tmp_path / "pngs"
    save_images(images, folder)
    assert image_source(str(npz), "SAMPLES").kind == "npz" and image_source(str(npz), "SAMPLES").label == "s"
    assert image_source(str(folder), "SAMPLES").kind == "folder" and image_source(str(folder), "X").label == "pngs"
    split = image_source("synthetic:val", "--reference")
    assert (split.kind, split.data.name, split.split, split.label) == ("dataset", "synthetic", "val", "synthetic-val")
    assert dataset_split("cifar10:train") == ("cifar10", "train")
    assert dataset_split("pretrained:cpu-demo") is None and dataset_split("hf:google/ddpm-cifar10-32") is None
    assert dataset_split("folder:train") is None  # a folder is given as its path


@pytest.mark.parametrize("text, fragment", [
    ("missing.npz", "missing.npz: no such file"),
    ("nothing-here", "does not exist; give a .npz"),
    ("cifar100:train", "unknown dataset 'cifar100'"),
    ("mnist:dev", "unknown split 'dev'"),
    ("synthetic:test", "synthetic has no test split"),
    ("folder:train", "unknown dataset 'folder'"),
])
def test_bad_sources_are_user_errors_naming_the_flag(text, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="^--reference ") as error:
        image_source(text, "--reference")
    assert fragment in str(error.value)


def test_a_file_that_is_no_npz_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="is neither a .npz"):
        image_source(str(tmp_path / "notes.txt"), "SAMPLES")


def test_npz_folder_and_dataset_give_the_same_images_and_n_draws_the_reference_subset(tmp_path, images, tiny_data):
    save_images(images, tmp_path / "pngs")
    npz = image_source(str(save_npz(tmp_path / "s.npz", images)), "SAMPLES")
    folder = image_source(str(tmp_path / "pngs"), "SAMPLES")
    assert torch.equal(read_images(npz), images) and torch.equal(read_images(folder), images)
    assert torch.equal(read_images(npz, 10), images[subset_indices(32, 10)])
    assert torch.equal(read_images(npz, 100), images)  # --n caps, never pads
    val = image_source("synthetic:val", "--reference")
    assert torch.equal(read_images(val), load_dataset(DataConfig(name="synthetic"), "val").images)


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((4, 8, 8, 3), np.float32), "float32 of shape (4, 8, 8, 3)"),
    (np.zeros((4, 8, 8), np.uint8), "uint8 of shape (4, 8, 8)"),
    (np.zeros((4, 8, 8, 2), np.uint8), "uint8 of shape (4, 8, 8, 2)"),
    (np.zeros((0, 8, 8, 3), np.uint8), "of shape (0, 8, 8, 3)"),
])
def test_npz_images_of_another_type_or_shape_are_refused(tmp_path, array, fragment):
    np.savez(tmp_path / "x.npz", images=array)
    with pytest.raises(UserError, match="expected uint8 N×H×W×C") as error:
        read_npz_images(tmp_path / "x.npz")
    assert fragment in str(error.value)


def test_npz_without_images_or_with_a_pickle_or_damaged_is_refused(tmp_path, images):
    save_npz(tmp_path / "x.npz", images, key="samples")
    with pytest.raises(UserError, match="no `images` array \\(it holds samples\\)"):
        read_npz_images(tmp_path / "x.npz")
    np.savez(tmp_path / "p.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="not a readable .npz"):
        read_npz_images(tmp_path / "p.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "x.npz").read_bytes()[:50])
    with pytest.raises(UserError, match="not a readable .npz"):
        read_npz_images(tmp_path / "cut.npz")


def test_images_sha256_follows_content_and_shape(images):
    changed = images.clone()
    changed[3, 0, 5, 5] ^= 1
    assert images_sha256(images) == images_sha256(images.clone())
    assert images_sha256(changed) != images_sha256(images)
    assert images_sha256(images.reshape(16, 6, 16, 16)) != images_sha256(images)  # same bytes, other images


def test_images_features_are_cached_by_content(images, tiny_classifier, isolated_cache, monkeypatch):
    extractor, _ = classifier_features(tiny_classifier)
    calls = []
    extract = extractor.extract
    monkeypatch.setattr(extractor, "extract", lambda *a, **k: calls.append(1) or extract(*a, **k))
    first, stats, info = images_features(images, extractor, progress=False)
    again, _, info_again = images_features(images.clone(), extractor, progress=False)
    assert (info["cached"], info_again["cached"], len(calls)) == (False, True, 1)
    assert np.array_equal(first, again) and stats.count == 32 and info["sha256"] == images_sha256(images)
    changed = images.clone()
    changed[0] = 255 - changed[0]
    assert not images_features(changed, extractor, progress=False)[2]["cached"] and len(calls) == 2


def test_describe_names_files_by_digest_and_datasets_by_key(tmp_path, images):
    npz = image_source(str(save_npz(tmp_path / "s.npz", images)), "SAMPLES")
    assert describe(npz, images, "abc") == {"source": str(tmp_path / "s.npz"), "kind": "npz", "n": 32,
                                            "image_shape": [3, 16, 16], "sha256": "abc"}
    split = image_source("synthetic:val", "--reference")
    assert describe(split, images[:4], None) == {"source": "synthetic:val", "kind": "dataset", "n": 4,
                                                 "image_shape": [3, 16, 16], "dataset": "synthetic", "split": "val"}


def test_a_models_reference_split_overrides_its_held_out_split(tiny_data, tmp_path):
    assert reference_data(tiny_data, None) == (tiny_data, "val")
    assert reference_data(tiny_data, ("synthetic", "train")) == (tiny_data, "train")  # its own images, its own split
    other, split = reference_data(DataConfig(name="synthetic", root="/data"), ("cifar10", "test"))
    assert (other, split) == (DataConfig(name="cifar10", root="/data"), "test")
    with pytest.raises(UserError, match="val_fraction is 0"):
        reference_data(DataConfig(name="synthetic", val_fraction=0.0), ("synthetic", "val"))
    assert model_reference(None) is None and model_reference("cifar10:train") == ("cifar10", "train")
    save_npz(tmp_path / "r.npz", torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    for text in (str(tmp_path / "r.npz"), str(tmp_path)):
        with pytest.raises(UserError, match="scored against a dataset split NAME:SPLIT"):
            model_reference(text)
