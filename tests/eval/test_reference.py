"""Reference features: the cache round trip, its reuse and checks, and FD's floor on real images."""

import io
import json
import warnings

import numpy as np
import pytest
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.errors import DdpmlabNote
from ddpmlab.eval.cache import cache_dir, dataset_key
from ddpmlab.eval.classifier import classifier_features
from ddpmlab.eval.features import ClassifierFeatures
from ddpmlab.eval.reference import (feature_stats, load_reference, reference_features, reference_path, save_reference,
                                    subset_indices)
from ddpmlab.eval.scores import fd_between

TINY = DataConfig(name="synthetic", synthetic_count=512, val_fraction=0.1)


class MeanColour(torch.nn.Module):
    """Stand-in classifier: the per-channel means and standard deviations of the image are its features."""

    feature_dim = 6

    def features(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class Counting(ClassifierFeatures):
    def __init__(self, extractor_id="mean-colour-test"):
        super().__init__(MeanColour(), extractor_id)
        self.calls = 0

    def extract(self, images, *args, **kwargs):
        self.calls += 1
        return super().extract(images, *args, **kwargs)


def test_cache_round_trip_reuses_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path))
    extractor = Counting()
    features, stats, info = reference_features(TINY, "val", extractor, 40, progress=False)
    assert extractor.calls == 1 and not info["cached"] and info["count"] == 40
    assert info["path"] == str(tmp_path / "stats" / f"{dataset_key(TINY, 'val')}-val-mean-colour-test-40.npz")
    again, stats_again, info_again = reference_features(TINY, "val", extractor, 40, progress=False)
    assert extractor.calls == 1 and info_again["cached"]  # read, not recomputed
    np.testing.assert_array_equal(again, features)
    assert stats_again.count == 40 and stats_again.extractor == "mean-colour-test"
    np.testing.assert_allclose(stats_again.mean(), features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats_again.cov(), np.cov(features.astype(np.float64), rowvar=False), rtol=1e-9)


def test_mismatches_recompute(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path))
    extractor = Counting()
    features, stats, info = reference_features(TINY, "val", extractor, 40, progress=False)
    # a file at the right name but written by another extractor: recomputed and overwritten
    save_reference(info["path"], features, feature_stats(features, "another-extractor"), {"name": "synthetic"})
    reference_features(TINY, "val", extractor, 40, progress=False)
    assert extractor.calls == 2
    reference_features(TINY, "val", extractor, 40, progress=False)
    assert extractor.calls == 2  # the overwrite is reused
    # another count, another split subset, another dataset variant: each its own file
    assert reference_features(TINY, "val", extractor, 30, progress=False)[2]["count"] == 30
    other = DataConfig(name="synthetic", synthetic_count=512, val_fraction=0.2)
    assert not reference_features(other, "val", extractor, 40, progress=False)[2]["cached"]
    assert extractor.calls == 4
    # a corrupt file is recomputed with a note, not an error
    with open(info["path"], "wb") as handle:
        handle.write(b"not an npz")
    with pytest.warns(DdpmlabNote, match="are damaged .*; recomputing them"):
        assert not reference_features(TINY, "val", extractor, 40, progress=False)[2]["cached"]


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path))
    assert cache_dir("stats") == tmp_path / "stats"
    assert reference_path(DataConfig(name="fashion-mnist"), "test", "x", 10) == tmp_path / "stats" / "fashion-mnist-test-x-10.npz"
    monkeypatch.delenv("DDPMLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("stats") == tmp_path / "home" / ".cache" / "ddpmlab" / "stats"


def test_dataset_key_names_default_images_plainly():
    assert dataset_key(DataConfig(name="fashion-mnist")) == "fashion-mnist"
    assert dataset_key(DataConfig(name="fashion-mnist", root="/elsewhere", random_flip=True)) == "fashion-mnist"
    resized = dataset_key(DataConfig(name="fashion-mnist", image_size=32))
    assert resized.startswith("fashion-mnist-") and resized != dataset_key(DataConfig(name="fashion-mnist", image_size=16))
    # the train subset depends on limit; the test split does not
    assert dataset_key(DataConfig(name="mnist", limit=100), "test") == "mnist"
    assert dataset_key(DataConfig(name="mnist", limit=100), "train") != "mnist"


def test_subset_indices_fixed_sorted_distinct():
    index = subset_indices(1000, 100)
    assert torch.equal(index, subset_indices(1000, 100)) and len(index.unique()) == 100
    assert torch.equal(index, index.sort().values) and index.max() > 500  # spread, not the first 100
    assert torch.equal(subset_indices(7, 100), torch.arange(7))


def noised(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_fd_of_real_images_is_zero_against_themselves_and_grows_with_noise(synthetic_classifier):
    extractor, _ = classifier_features(synthetic_classifier[0])
    train = load_dataset(TINY, "train").images
    stats = feature_stats(extractor.extract(train, progress=False), extractor.extractor_id)
    assert abs(fd_between(stats, stats)) < 1e-6
    distances = [fd_between(stats, feature_stats(extractor.extract(noised(train, sigma), progress=False),
                                                 extractor.extractor_id)) for sigma in (10, 60)]
    shifted = (train.int() + 40).clamp(max=255).to(torch.uint8)
    shift = fd_between(stats, feature_stats(extractor.extract(shifted, progress=False), extractor.extractor_id))
    assert 1e-3 < distances[0] < distances[1] and shift > 1e-3
    with pytest.raises(ValueError, match="different extractors"):
        fd_between(stats, feature_stats(np.zeros((3, extractor.dim)), "other"))


def test_a_damaged_cache_is_recomputed_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path))
    extractor = Counting()
    features, _, info = reference_features(TINY, "val", extractor, 40, progress=False)
    path = info["path"]
    intact = open(path, "rb").read()
    identity = json.loads(str(np.load(path)["identity"]))
    # every single-bit flip and truncation: the original data or None with a note, never an error or other numbers
    rng, flips = np.random.default_rng(0), 0
    for position in [*rng.integers(0, len(intact), 48), len(intact) - 1]:
        for damaged in (intact[:position] + bytes([intact[position] ^ 1 << rng.integers(8)]) + intact[position + 1:],
                        intact[:position]):
            with open(path, "wb") as handle:
                handle.write(damaged)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = load_reference(path, extractor.extractor_id, 40, identity)
            notes = [str(w.message) for w in caught if w.category is DdpmlabNote]
            if loaded is None:
                assert len(notes) <= 1 and all(n.startswith(f"the cached reference statistics {path} are damaged")
                                               for n in notes), notes
                flips += bool(notes)
            else:
                assert not notes
                np.testing.assert_array_equal(loaded[0], features)  # a flip in what no one reads (zip timestamps)
    assert flips >= 60
    # altered consistently (a valid zip, its CRCs right): only the SHA-256 tells
    with np.load(io.BytesIO(intact)) as data:
        arrays = {key: data[key] for key in data.files}
    np.savez(path, **{**arrays, "features": np.where(arrays["features"] > 0, 1.0, arrays["features"])})
    with pytest.warns(DdpmlabNote, match="its SHA-256 differs from the one recorded"):
        assert load_reference(path, extractor.extractor_id, 40, identity) is None
    with pytest.warns(DdpmlabNote, match="recomputing them"):
        _, _, again = reference_features(TINY, "val", extractor, 40, progress=False)
    assert not again["cached"] and extractor.calls == 2
    assert reference_features(TINY, "val", extractor, 40, progress=False)[2]["cached"]  # the rewrite is intact
    # a cache written before checksums (no sha256) is still read
    del arrays["sha256"]
    np.savez(path, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DdpmlabNote)
        np.testing.assert_array_equal(load_reference(path, extractor.extractor_id, 40, identity)[0], features)
