"""The figures (matplotlib, Agg): every run's loss curves on one figure per method family, sample grids from saved
.npz samples, and a sampler sweep's quality against cost."""

from __future__ import annotations

import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddpmlab.errors import UserError
from ddpmlab.eval.sweep import ddpm_reference
from ddpmlab.images import save_grid
from ddpmlab.store.metrics_csv import read_metrics

# method -> family: the runs whose losses share a figure (their losses mean the same thing)
FAMILIES = {"ddpm": "diffusion", "vae": "vae", "dcgan": "gan", "vaegan": "gan"}
FAMILY_TITLES = {"diffusion": "diffusion models", "vae": "VAEs: negative ELBO",
                 "gan": "GANs: discriminator and generator losses"}
GRID_IMAGES = 64  # the first images of each samples file shown in the report
PROGRESSION_GRIDS = 6  # a diffusion run's sample grids shown over training (evenly spaced, the last included)


def family_title(family: str, rows: list[dict]) -> str:
    """A loss figure's title: the family, and the loss its runs trained on (each row's "loss", e.g. a diffusion
    run's parameterisation and weighting): once when they share it, else per run."""
    losses = {row["name"]: row["loss"] for row in rows if row.get("loss")}
    title = FAMILY_TITLES.get(family, family)
    if len(set(losses.values())) == 1:
        return f"{title}: {next(iter(losses.values()))}"
    return f"{title}: " + "; ".join(f"{name} {loss}" for name, loss in losses.items()) if losses else title


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


def sweep_figure(points: list[dict], metric: str, title: str):
    """Two panels: `metric` against network evaluations and against seconds per 1,000 images, both on log axes
    labelled in plain numbers (the points' own NFE on the first); a panel without timings says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    timed_any = False
    for method in dict.fromkeys(p["sampler"] for p in points):
        rows = sorted((p for p in points if p["sampler"] == method and p["metrics"].get(metric) is not None),
                      key=lambda p: p["nfe"])
        if not rows:
            continue
        values = [p["metrics"][metric] for p in rows]
        axes[0].plot([p["nfe"] for p in rows], values, "o-", label=method)
        timed = [p for p in rows if p["seconds_per_1000"] is not None]
        if timed:
            axes[1].plot([p["seconds_per_1000"] for p in timed], [p["metrics"][metric] for p in timed], "o-",
                         label=method)
            timed_any = True
        for p, value in zip(rows, values):
            axes[0].annotate(str(p["nfe"]), (p["nfe"], value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    reference = ddpm_reference(points, metric)
    if reference is not None:
        for ax in axes[: 2 if timed_any else 1]:
            ax.axhline(reference["metrics"][metric], color="0.5", ls=":", lw=1, label=f"ddpm {reference['nfe']} level")
    nfes = sorted({p["nfe"] for p in points if p["metrics"].get(metric) is not None})
    axes[0].set(xscale="log", xlabel="network evaluations (NFE)", ylabel=metric)
    axes[0].xaxis.set_major_locator(ticker.FixedLocator(thin_log_ticks(nfes)))
    axes[1].set(xlabel="seconds per 1,000 images", ylabel=metric)
    if timed_any:
        axes[1].set_xscale("log")
        axes[1].xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    else:
        axes[1].set(xticks=[], yticks=[])
        axes[1].text(0.5, 0.5, "no timings: every point reused saved samples\nwhose timing was not kept",
                     ha="center", va="center", transform=axes[1].transAxes, fontsize=9, color="0.4")
    for ax in axes:
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # log axes label their minor ticks: they overlapped
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def thin_log_ticks(values: list[float], min_ratio: float = 1.25) -> list[float]:
    """`values` (sorted) without those closer than `min_ratio` to the previous tick kept, so that the labels of a
    log axis never run into each other."""
    kept = []
    for value in values:
        if not kept or value >= kept[-1] * min_ratio:
            kept.append(value)
    return kept


def plot_sweep(points: list[dict], metric: str, path: Path, title: str) -> Path:
    """sweep_figure written as a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = sweep_figure(points, metric, title)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# -- figures -----------------------------------------------------------------------------------------
def make_figures(rows: list[dict], folder: Path) -> dict:
    """Write the report's figures into `folder` and return their paths relative to its parent: loss curves per
    method family, each run's sample grid, each diffusion run's grids over training and its sweep plot."""
    folder.mkdir(parents=True, exist_ok=True)
    relative = lambda path: f"{folder.name}/{Path(path).name}"  # noqa: E731 - paths as report.md links them
    figures = {"loss": [], "samples": [], "progression": [], "sweeps": []}
    families: dict[str, dict] = {}
    members: dict[str, list[dict]] = {}
    for row in rows:
        family = FAMILIES.get(row["method"], row["method"])
        metrics_path = Path(row["run_dir"]) / "metrics.csv"
        if metrics_path.is_file():
            families.setdefault(family, {})[row["name"]] = loss_curves(read_metrics(metrics_path),
                                                                       family_columns(family))
            members.setdefault(family, []).append(row)
    for family, runs in families.items():
        path = plot_loss_family(runs, family_columns(family), folder / f"loss-{family}.png",
                                family_title(family, members[family]))
        figures["loss"].append({"family": family, "runs": list(runs), "path": relative(path)})
    for row in rows:
        if row.get("samples_npz") and Path(row["samples_npz"]).is_file():
            path = samples_grid(Path(row["samples_npz"]), folder / f"samples-{row['name']}.png")
            figures["samples"].append({"name": row["name"], "path": relative(path), "npz": row["samples_npz"]})
        grids = sorted((Path(row["run_dir"]) / "samples").glob("step_*.png"))
        if row["method"] == "ddpm" and grids:
            chosen = []
            for grid in evenly_spaced(grids, PROGRESSION_GRIDS):
                copy = shutil.copyfile(grid, folder / f"progress-{row['name']}-{grid.name}")
                chosen.append({"step": int(grid.stem.split("_")[1]), "path": relative(copy)})
            figures["progression"].append({"name": row["name"], "grids": chosen})
        if row.get("sweep"):
            copy = shutil.copyfile(row["sweep"]["plot"], folder / f"sweep-{row['name']}.png")
            figures["sweeps"].append({"name": row["name"], "path": relative(copy), "json": row["sweep"]["json"]})
    return figures
