"""A folder of image files, searched recursively; its subfolders, if any, are the classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpmlab.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) read from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as picture:
            return picture.mode, picture.size
    except OSError as exc:
        raise UserError(f"{path}: not a readable image ({exc}); remove it from the folder") from None


def _read(path: Path, mode: str, image_size: int | None) -> np.ndarray:
    """H×W or H×W×3 uint8 pixels; with `image_size`, the centre square resized (antialiased bilinear)."""
    try:
        with Image.open(path) as picture:
            picture = picture.convert(mode)
            if image_size is not None:
                width, height = picture.size
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                picture = picture.crop((left, top, left + side, top + side))  # resize(box=) would blend in the margins
                picture = picture.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(picture)
    except OSError as exc:
        raise UserError(f"{path}: cannot decode the image ({exc}); remove it from the folder") from None


def _check_one_square_size(files: list[Path], sizes: list[tuple[int, int]]) -> None:
    for path, size in zip(files, sizes):
        if size[0] != size[1]:
            raise UserError(f"{path} is {size[0]}×{size[1]}, not square; set data.image_size to centre-crop "
                            f"and resize every image")
        if size != sizes[0]:
            raise UserError(f"images differ in size: {files[0]} is {sizes[0][0]}×{sizes[0][1]}, {path} is "
                            f"{size[0]}×{size[1]}; set data.image_size to resize them all")


def load_folder(path: str, image_size: int | None) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """(uint8 N×C×H×W images, int64 labels or None, class names or None) from the image files under `path`.

    C is 1 when every image is grayscale, else 3 (RGB). Files are taken in sorted path order; with
    subfolders, each (sorted by name) is a class and every image must lie inside one.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"data.path {path} is not a folder")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(EXTENSIONS)}) found")

    top_folders = [f.relative_to(folder).parts[0] if f.parent != folder else None for f in files]
    class_names = sorted({name for name in top_folders if name is not None}) or None
    labels = None
    if class_names is not None:
        if None in top_folders:
            loose = files[top_folders.index(None)]
            raise UserError(f"{loose} lies beside the class subfolders of {folder}; move it into one of them")
        labels = torch.tensor([class_names.index(name) for name in top_folders], dtype=torch.int64)

    modes, sizes = zip(*(_header(f) for f in files))
    if image_size is None:
        _check_one_square_size(files, list(sizes))
    mode = "L" if all(m in _GRAYSCALE_MODES for m in modes) else "RGB"
    pixels = np.stack([_read(f, mode, image_size) for f in files])
    images = torch.from_numpy(pixels[:, None] if mode == "L" else pixels.transpose(0, 3, 1, 2).copy())
    return images.contiguous(), labels, class_names
