"""The comparison's figures (matplotlib, Agg): every run's loss curves on one figure per method family, and
sample grids from saved .npz samples."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddpmlab.errors import UserError

# method -> family: the runs whose losses share a figure (their losses mean the same thing)
FAMILIES = {"ddpm": "diffusion", "vae": "vae", "dcgan": "gan", "vaegan": "gan"}
FAMILY_TITLES = {"diffusion": "diffusion models: L_simple", "vae": "VAEs: negative ELBO",
                 "gan": "GANs: discriminator and generator losses"}
GRID_IMAGES = 64  # the first images of each samples file shown in the report


def family_columns(family: str) -> tuple[str, ...]:
    """The loss columns plotted for a method family: a GAN's two players, else `loss`."""
    return ("loss_d", "loss_g") if family == "gan" else ("loss",)


def loss_curves(rows: list[dict], columns: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """{column: (steps, values)} of metrics.csv rows (read_metrics), skipping empty and non-finite cells."""
    curves = {}
    for column in columns:
        points = [(r["step"], r[column]) for r in rows if r.get(column) is not None and math.isfinite(r[column])]
        if points:
            curves[column] = tuple(map(list, zip(*points)))
    return curves


def plot_loss_family(runs: dict[str, dict[str, tuple[list[int], list[float]]]], columns: tuple[str, ...],
                     path: Path, title: str) -> Path:
    """One panel per loss column, one line per run ({run name: loss_curves(...)}), log-scale where every value is
    positive; written as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 3.6), dpi=100, squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = []
        for name, curves in runs.items():
            if column in curves:
                ax.plot(*curves[column], label=name, lw=1)
                values += curves[column][1]
        positive = bool(values) and all(v > 0 for v in values)
        ax.set(xlabel="step", ylabel=column, yscale="log" if positive else "linear")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def samples_grid(npz_path: Path, out_path: Path, count: int = GRID_IMAGES) -> Path:
    """The first `count` images of a samples .npz (uint8 N×H×W×C, as `ddpmlab eval` writes) as a PNG grid."""
    from ddpmlab.images import save_grid

    try:
        with np.load(npz_path, allow_pickle=False) as data:  # never pickles
            images = data["images"][:count]
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        raise UserError(f"{npz_path}: not a samples file ({exc.__class__.__name__}); delete it to sample again"
                        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{npz_path}: not a samples file (images {images.dtype} {images.shape}); "
                        f"delete it to sample again")
    return save_grid(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), out_path, scale=2)


def evenly_spaced(items: list, count: int) -> list:
    """`count` items spread evenly over `items`, first and last included (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]
