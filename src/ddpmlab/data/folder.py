"""A folder of image files, searched recursively; its subfolders, if any, are the classes."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ddpmlab.config import BAD_IMAGE_POLICIES
from ddpmlab.errors import DdpmlabWarning, UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA")
# what Pillow raises for a file it cannot identify or decode: truncated, empty, not an image, or a decompression bomb
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)


class BadImage(UserError):
    """An image file that cannot be read; data.on_bad_image decides whether it stops the load or is skipped."""


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) read from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as picture:
            return picture.mode, picture.size
    except _UNREADABLE as exc:
        raise BadImage(f"{path}: not a readable image ({exc}); remove it from the folder, "
                       f"or set data.on_bad_image=skip") from None


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
    except _UNREADABLE as exc:
        raise BadImage(f"{path}: cannot decode the image ({exc}); remove it from the folder, "
                       f"or set data.on_bad_image=skip") from None


def _read_each(files: list[Path], read: Callable, on_bad_image: str) -> tuple[dict, list[Path]]:
    """({file: read(file)} for the readable files, the unreadable ones); with on_bad_image "error" the first
    unreadable file raises its BadImage."""
    results, bad = {}, []
    for path in files:
        try:
            results[path] = read(path)
        except BadImage:
            if on_bad_image == "error":
                raise
            bad.append(path)
    return results, bad


def _check_one_square_size(files: list[Path], sizes: list[tuple[int, int]]) -> None:
    for path, size in zip(files, sizes):
        if size[0] != size[1]:
            raise UserError(f"{path} is {size[0]}×{size[1]}, not square; set data.image_size to centre-crop "
                            f"and resize every image")
        if size != sizes[0]:
            raise UserError(f"images differ in size: {files[0]} is {sizes[0][0]}×{sizes[0][1]}, {path} is "
                            f"{size[0]}×{size[1]}; set data.image_size to resize them all")


def _decode(files: list[Path], image_size: int | None, on_bad_image: str) -> tuple[list[Path], np.ndarray, str]:
    """(the readable files, their pixels stacked N×H×W or N×H×W×3, the mode "L" or "RGB"); the mode is "L" when
    every readable image is grayscale, so a skipped file never decides it."""
    headers, _ = _read_each(files, _header, on_bad_image)
    while True:
        kept = [f for f in files if f in headers]
        if not kept:
            return [], np.empty(0), "L"
        modes, sizes = zip(*(headers[f] for f in kept))
        if image_size is None:
            _check_one_square_size(kept, list(sizes))
        mode = "L" if all(m in _GRAYSCALE_MODES for m in modes) else "RGB"
        pixels, unreadable = _read_each(kept, lambda f: _read(f, mode, image_size), on_bad_image)
        if not unreadable:
            return kept, np.stack([pixels[f] for f in kept]), mode
        for path in unreadable:  # a header that opened but pixels that did not decode (truncated): again without it
            del headers[path]


def _report_skipped(folder: Path, skipped: list[Path], total: int, shown: int = 5) -> None:
    names = ", ".join(str(p.relative_to(folder)) for p in skipped[:shown]) + (", ..." if len(skipped) > shown else "")
    warnings.warn(f"skipped {len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''} of {total} in "
                  f"{folder}: {names} (data.on_bad_image=skip)", DdpmlabWarning, stacklevel=2)


def load_folder(path: str, image_size: int | None, on_bad_image: str = "error"
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """(uint8 N×C×H×W images, int64 labels or None, class names or None) from the image files under `path`.

    C is 1 when every image is grayscale, else 3 (RGB). Files are taken in sorted path order; with
    subfolders, each (sorted by name) is a class and every image must lie inside one. An unreadable file
    (truncated, empty, not an image) is a UserError naming it, or with `on_bad_image` "skip" left out, all
    such files counted and named in one DdpmlabWarning.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UserError(f"data.on_bad_image {on_bad_image!r} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"data.path {path} is not a folder")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(EXTENSIONS)}) found")

    top_folders = [f.relative_to(folder).parts[0] if f.parent != folder else None for f in files]
    class_names = sorted({name for name in top_folders if name is not None}) or None
    if class_names is not None and None in top_folders:
        loose = files[top_folders.index(None)]
        raise UserError(f"{loose} lies beside the class subfolders of {folder}; move it into one of them")

    kept, pixels, mode = _decode(files, image_size, on_bad_image)
    if len(kept) < len(files):
        if not kept:
            raise UserError(f"{folder}: none of its {len(files)} image files could be read (e.g. {files[0]})")
        readable = set(kept)
        _report_skipped(folder, [f for f in files if f not in readable], len(files))
    labels = None
    if class_names is not None:
        labels = torch.tensor([class_names.index(f.relative_to(folder).parts[0]) for f in kept], dtype=torch.int64)
    images = torch.from_numpy(pixels[:, None] if mode == "L" else pixels.transpose(0, 3, 1, 2).copy())
    return images.contiguous(), labels, class_names
