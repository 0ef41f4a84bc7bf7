"""CIFAR-10 from the official python batches, in a folder or straight out of the .tar.gz, or downloaded.

The batches are pickles; they are read with an unpickler that can rebuild only dicts, lists, bytes,
strings and numpy arrays, so a doctored file cannot run code.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from ddpmlab.errors import UserError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_BUILTINS = {"dict", "list", "tuple", "set", "bytes", "bytearray", "str", "int", "float"}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # how the official (Python 2) files name it
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_unpickle(data: bytes, source: str) -> object:
    """The object in a CIFAR-style pickle (Python 2 strings come back as bytes); UserError if unsafe or corrupt."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{source}: not a CIFAR-10 batch ({exc}); fetch the official cifar-10-python.tar.gz") from None


def _batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×3×32×32 images, int64 labels) of one batch: rows of 3072 bytes, red then green then blue planes."""
    batch = safe_unpickle(data, source)
    images = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3072 or labels is None or len(labels) != len(images):
        raise UserError(f"{source}: expected b'data' uint8 N×3072 and N b'labels'; fetch the official files")
    return images.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _from_archive(archive: Path, names: list[str]) -> dict[str, tuple[bytes, str]]:
    wanted = {f"{FOLDER}/{name}": name for name in names}
    try:
        with tarfile.open(archive, "r:gz") as tar:  # one pass in archive order: a gzip stream seeks back slowly
            found = {wanted[m.name]: tar.extractfile(m).read() for m in tar if m.isfile() and m.name in wanted}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{archive}: cannot read the CIFAR-10 batches ({exc}); fetch it again") from None
    for name in names:
        if name not in found:
            raise UserError(f"{archive} lacks {FOLDER}/{name}; fetch the official archive again")
    return {name: (found[name], f"{archive}:{FOLDER}/{name}") for name in names}


def _extracted_folder(root: Path, names: list[str]) -> Path | None:
    return next((f for f in (root / FOLDER, root) if all((f / name).is_file() for name in names)), None)


def _read_batches(root: Path, names: list[str], download: bool) -> dict[str, tuple[bytes, str]]:
    """{batch name: (pickle bytes, where it came from)} from the extracted folder, the archive, or a download."""
    archive = root / ARCHIVE
    folder = _extracted_folder(root, names)
    if folder is None and not archive.is_file() and download:
        # torchvision's downloader only (MD5-checked): its CIFAR10 class would read the batches with pickle.load
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except (OSError, RuntimeError) as exc:
            raise UserError(f"downloading cifar10 into {root} failed ({exc}); put {ARCHIVE} in data.root") from None
        folder = _extracted_folder(root, names)
    if folder is not None:
        return {name: ((folder / name).read_bytes(), str(folder / name)) for name in names}
    if archive.is_file():
        return _from_archive(archive, names)
    raise UserError(f"cifar10 batches ({', '.join(names)}) not found in {root / FOLDER}, {root} or {archive}; "
                    f"put the official {ARCHIVE} (or its extracted {FOLDER}) in data.root, or set data.download=true")


def load_cifar10(root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 N×3×32×32 images, int64 labels, class names) of the official "train" or "test" split."""
    batches = [_batch(data, source) for data, source in _read_batches(root, _BATCHES[split], download).values()]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise UserError(f"cifar10 {split}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return torch.from_numpy(images), torch.from_numpy(labels), list(CLASS_NAMES)
