"""Image conversions and grids: the one place where pixels meet [-1, 1] tensors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def uint8_to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×C×H×W in [0, 255] -> float32 in [-1, 1] (Ho et al.: x = 2·(k/255) − 1)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] (clamped) -> uint8 in [0, 255], rounding to the nearest level; same device."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 N×C×H×W images into one H'×W'×3 uint8 array (grayscale repeated), on the CPU."""
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        images = model_to_uint8(images)
    n, c, h, w = images.shape
    if c == 1:
        images = images.expand(n, 3, h, w)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, 3), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i].permute(1, 2, 0).numpy()
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Write images (uint8 or [-1, 1] floats, N×C×H×W) as one PNG grid, atomically; `scale` enlarges pixels."""
    import io

    from PIL import Image

    from ddpmlab.paths import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(make_grid(images, nrow))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    encoded = io.BytesIO()
    picture.save(encoded, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    atomic_write_bytes(path, encoded.getvalue())
    return path


def save_labelled_grid(images: torch.Tensor, row_labels: list[str], path: str | Path, scale: int = 2) -> Path:
    """A grid with one row per label (len(images) / len(row_labels) images each) and the label written left of
    its row; images uint8 or [-1, 1] floats, N×C×H×W."""
    from PIL import Image, ImageDraw

    columns = len(images) // len(row_labels)
    grid = Image.fromarray(make_grid(images, nrow=columns))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    margin = 8 + 7 * max(len(label) for label in row_labels)
    picture = Image.new("RGB", (grid.width + margin, grid.height), "white")
    picture.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(picture)
    row_height = grid.height / len(row_labels)
    for i, label in enumerate(row_labels):
        draw.text((4, int((i + 0.5) * row_height) - 6), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def image_file_names(count: int) -> list[str]:
    """The names `save_images` gives `count` images: 000000.png, 000001.png, ... (more digits past a million)."""
    digits = max(6, len(str(count - 1)))
    return [f"{i:0{digits}d}.png" for i in range(count)]


def save_images(images: torch.Tensor, folder: str | Path) -> list[Path]:
    """Write each image (uint8 or [-1, 1] floats, N×C×H×W) as its own PNG, folder/000000.png, ...: the layout
    clean-fid and pytorch-fid read."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        images = model_to_uint8(images)
    paths = []
    for name, image in zip(image_file_names(len(images)), images):
        array = image.permute(1, 2, 0).numpy()
        path = folder / name
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
        paths.append(path)
    return paths
