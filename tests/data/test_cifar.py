"""CIFAR-10 python batches, full-size and byte-for-byte in the official layout: folder, tar.gz, unsafe pickles."""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset

# (batch, row, channel, y, x, value): pixels marked in otherwise black images
MARKS = [("data_batch_1", 0, 0, 0, 0, 11), ("data_batch_3", 7, 0, 31, 0, 99), ("data_batch_5", 9999, 1, 2, 30, 250),
         ("test_batch", 1234, 2, 5, 17, 200)]
# the official archive's member order, which is not sorted
ARCHIVE_ORDER = ["data_batch_4", "readme.html", "test_batch", "data_batch_3", "batches.meta",
                 "data_batch_2", "data_batch_5", "data_batch_1"]


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), as cPickle wrote the official batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj: bytes) -> None:
        size = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + size.to_bytes(4, "little"))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_str


def python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    # Python 2's numpy named the array rebuilder numpy.core.multiarray._reconstruct
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch_pickle(name: str, batch_index: int) -> bytes:
    """A 10000-image batch: b'data' 10000×3072 uint8 rows (1024 red, 1024 green, 1024 blue, each row-major)."""
    data = np.zeros((10000, 3072), np.uint8)
    for batch, row, channel, y, x, value in MARKS:
        if batch == name:
            data[row, channel * 1024 + y * 32 + x] = value
    labels = [(row + batch_index) % 10 for row in range(10000)]
    return python2_pickle({b"batch_label": b"batch %d of 5" % batch_index, b"labels": labels, b"data": data,
                           b"filenames": [b"image_%05d.png" % row for row in range(10000)]})


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """data.root holding both cifar-10-batches-py/ and cifar-10-python.tar.gz (another folder below: archive only)."""
    root = tmp_path_factory.mktemp("cifar")
    files = {f"data_batch_{i}": batch_pickle(f"data_batch_{i}", i) for i in range(1, 6)}
    files["test_batch"] = batch_pickle("test_batch", 0)
    files["batches.meta"] = python2_pickle({b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072})
    files["readme.html"] = b"<html></html>"
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    archive_root = root / "archive-only"
    archive_root.mkdir()
    with tarfile.open(archive_root / "cifar-10-python.tar.gz", "w:gz", compresslevel=1) as tar:
        for name in ARCHIVE_ORDER:
            (folder / name).write_bytes(files[name])
            tar.add(folder / name, arcname=f"cifar-10-batches-py/{name}")
    return root


@pytest.mark.parametrize("where", [".", "archive-only"])
def test_test_split_pixels_land_at_channel_y_x(cifar_root, where):
    data = load_dataset(DataConfig(name="cifar10", root=str(cifar_root / where), download=False), "test")
    assert data.images.shape == (10000, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.images.nonzero().tolist() == [[1234, 2, 5, 17]] and data.images[1234, 2, 5, 17] == 200
    assert data.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (data.num_classes, data.class_names[0], data.class_names[9]) == (10, "airplane", "truck")


@pytest.mark.parametrize("where", [".", "archive-only"])
def test_training_batches_are_concatenated_in_order(cifar_root, where):
    cfg = DataConfig(name="cifar10", root=str(cifar_root / where), download=False, val_fraction=0.0)
    data = load_dataset(cfg, "train")
    assert data.images.shape == (50000, 3, 32, 32)
    assert data.images.nonzero().tolist() == [[0, 0, 0, 0], [20007, 0, 31, 0], [49999, 1, 2, 30]]
    assert data.images[[0, 20007, 49999], [0, 0, 1], [0, 31, 2], [0, 0, 30]].tolist() == [11, 99, 250]
    assert data.labels[[0, 10000, 49999]].tolist() == [1, 2, (9999 + 5) % 10]


def test_default_split_holds_out_two_percent(cifar_root):
    cfg = DataConfig(name="cifar10", root=str(cifar_root), download=False)
    assert (len(load_dataset(cfg, "train")), len(load_dataset(cfg, "val"))) == (49000, 1000)


class Exploit:
    """Unpickling this would delete `victim`."""

    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return os.remove, (str(self.victim),)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("still here")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(victim), b"labels": []}))
    with pytest.raises(UserError, match=r"test_batch: not a CIFAR-10 batch \(refusing to load (posix|nt).remove\)"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")
    assert victim.read_text() == "still here"


@pytest.mark.parametrize("protocol", [2, 4])
def test_batches_resaved_by_python3_load_too(tmp_path, protocol):
    data = np.zeros((3, 3072), np.uint8)
    data[2, 1024 + 32 + 2] = 5  # green plane, y=1, x=2
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [7, 8, 9]}, protocol=protocol))
    test = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")
    assert test.images.nonzero().tolist() == [[2, 1, 1, 2]] and test.labels.tolist() == [7, 8, 9]


def test_batch_without_the_official_keys_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(python2_pickle({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(UserError, match="test_batch: expected b'data' uint8 N×3072"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")


def test_missing_batches_without_download(tmp_path):
    with pytest.raises(UserError, match="cifar-10-python.tar.gz.*data.download=true"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), "test")


def test_a_download_uses_torchvisions_downloader_only_and_reads_with_the_safe_unpickler(tmp_path, monkeypatch):
    """torchvision's CIFAR10 class would pickle.load the batches; only its MD5-checked downloader is called."""
    import torchvision.datasets.utils as tv_utils
    from torchvision.datasets import CIFAR10

    calls = []

    def download(url, download_root, filename, md5):  # offline: what the archive would extract to
        calls.append((url, download_root, filename, md5))
        folder = Path(download_root) / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        (folder / "test_batch").write_bytes(python2_pickle({b"data": np.full((2, 3072), 9, np.uint8), b"labels": [4, 2]}))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", download)
    data = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=True), "test")
    assert calls == [(CIFAR10.url, str(tmp_path), CIFAR10.filename, CIFAR10.tgz_md5)]
    assert data.labels.tolist() == [4, 2] and data.images.unique().tolist() == [9]
