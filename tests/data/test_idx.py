"""MNIST / Fashion-MNIST IDX files: exact round trips, lookup routes, corrupt files, the real Debian copy."""

import gzip
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.data import idx, load_dataset


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as LeCun's: bytes 0, 0, type 0x08 (ubyte), ndim; big-endian uint32 dims; the pixels. .gz: gzipped."""
    data = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]; prefix "train" or "t10k"."""
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def random_split(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count, dtype=np.uint8)


def write_dataset(folder: Path, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """50 training and 20 test images of random pixels; returns {"train"/"test": (images, labels)}."""
    splits = {"train": random_split(0, 50), "test": random_split(1, 20)}
    write_split(folder, "train", *splits["train"], gz=gz)
    write_split(folder, "t10k", *splits["test"], gz=gz)
    return splits


def rows_in(images: torch.Tensor, source: np.ndarray) -> list[int]:
    """Which row of `source` each image is (random 28×28 images are all distinct)."""
    row_of = {image.tobytes(): row for row, image in enumerate(source)}
    return [row_of[image[0].numpy().tobytes()] for image in images]


@pytest.mark.parametrize("gz", [True, False])
def test_test_split_round_trips_exactly(tmp_path, gz):
    images, labels = write_dataset(tmp_path, gz)["test"]
    data = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), "test")
    assert data.images.shape == (20, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.dtype == torch.int64 and torch.equal(data.labels, torch.from_numpy(labels).long())
    assert (len(data), data.channels, data.image_size, data.num_classes) == (20, 1, 28, 10)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_train_and_val_partition_the_training_file(tmp_path):
    images, labels = write_dataset(tmp_path, gz=True)["train"]
    cfg = DataConfig(name="mnist", root=str(tmp_path), download=False, val_fraction=0.2)
    train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    assert (len(train), len(val)) == (40, 10)
    kept, held_out = rows_in(train.images, images), rows_in(val.images, images)
    assert sorted(kept + held_out) == list(range(50))
    assert kept == sorted(kept)  # training images keep the file's order
    assert torch.equal(train.labels, torch.from_numpy(labels[kept]).long())
    assert train.class_names == [str(digit) for digit in range(10)]


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_found_in_the_named_subfolder_and_torchvisions_layout(tmp_path, layout):
    images, _ = write_dataset(tmp_path / layout, gz=False)["test"]
    data = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), "test")
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


def test_truncated_file_is_refused_by_name(tmp_path):
    write_dataset(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte: truncated"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False), "test")


def test_truncated_gzip_stream_is_refused_by_name(tmp_path):
    write_dataset(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False), "test")


def test_bad_magic_number_is_refused(tmp_path):
    write_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((20, 2), np.uint8))  # 2-d: not a label file
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False), "test")


def test_image_and_label_counts_must_agree(tmp_path):
    write_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(UserError, match="20 images but .* 19 labels"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False), "test")


def test_missing_files_without_download_name_the_places_looked(tmp_path):
    with pytest.raises(UserError) as error:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "data.download=true" in message and "apt-get" not in message


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), "test")


MNIST_RESOURCES = [("train-images-idx3-ubyte.gz", "md5-1"), ("train-labels-idx1-ubyte.gz", "md5-2"),
                   ("t10k-images-idx3-ubyte.gz", "md5-3"), ("t10k-labels-idx1-ubyte.gz", "md5-4")]


def fake_torchvision(monkeypatch, download_and_extract_archive) -> None:
    """Replace torchvision for the code under test, so no test touches the network: its MNIST class (only its
    mirrors and resources are read) and its downloader."""
    mnist = types.SimpleNamespace(mirrors=["https://mirror-a/", "https://mirror-b/"], resources=MNIST_RESOURCES)
    utils = types.SimpleNamespace(download_and_extract_archive=download_and_extract_archive)
    datasets = types.SimpleNamespace(MNIST=mnist, utils=utils)
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(datasets=datasets))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    monkeypatch.setitem(sys.modules, "torchvision.datasets.utils", utils)


def test_download_reads_what_torchvision_leaves_in_raw(tmp_path, monkeypatch):
    images, labels = random_split(2, 30)
    calls = []

    def download(url, download_root, filename, md5):  # what torchvision's downloader leaves: the files gunzipped
        calls.append((url, download_root, filename, md5))
        if filename.startswith("t10k-images"):
            write_split(Path(download_root), "t10k", images, labels, gz=False)

    fake_torchvision(monkeypatch, download)
    data = load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=True), "test")
    raw = str(tmp_path / "MNIST" / "raw")
    assert calls == [(f"https://mirror-a/{name}", raw, name, md5) for name, md5 in MNIST_RESOURCES]
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


def test_failed_download_is_a_user_error_after_every_mirror(tmp_path, monkeypatch):
    tried = []

    def offline(url, download_root, filename, md5):
        tried.append(url)
        raise RuntimeError(f"Error downloading {filename}")

    fake_torchvision(monkeypatch, offline)
    with pytest.raises(UserError, match="downloading mnist into .* failed .*Error downloading train-images-idx3-ubyte.gz; "
                                        "Error downloading"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=True))
    assert tried == ["https://mirror-a/train-images-idx3-ubyte.gz", "https://mirror-b/train-images-idx3-ubyte.gz"]


@pytest.mark.skipif(not idx.DEBIAN_FASHION_MNIST.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    cfg = DataConfig(name="fashion-mnist", root=str(tmp_path), download=False)  # val_fraction 0.02
    train, val, test = (load_dataset(cfg, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (58800, 1200, 10000)
    assert test.images.shape == (10000, 1, 28, 28)
    training_pixel_sum = train.images.double().sum() + val.images.double().sum()
    assert (training_pixel_sum / (60000 * 784 * 255)).item() == pytest.approx(0.286040, abs=1e-6)
    assert (test.images.double().mean() / 255).item() == pytest.approx(0.286849, abs=1e-6)
    assert test.labels.bincount().tolist() == [1000] * 10
    assert val.labels.bincount().tolist() == [115, 124, 133, 113, 133, 114, 120, 118, 115, 115]  # the fixed held-out draw
