"""The run's metrics.csv and its loss-curve plot."""

from __future__ import annotations

import csv
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

from ddpmlab.errors import UserError

COLUMNS = ("step", "loss", "val_loss", "lr", "grad_norm", "images_per_s", "wall_s")  # every run's; a method adds its own


class RunLog:
    """RUN_DIR/run.log: timestamped notes of every session (device, sizes, warnings); warnings also go to stderr."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def note(self, message: str, warning: bool = False) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.path.open("a") as handle:
            handle.write(f"{stamp} {'warning: ' if warning else ''}{message}\n")
        if warning:
            print(f"warning: {message}", file=sys.stderr)


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.csv, whose columns are fixed per run: `columns` when the file is new; on
    resume the file's own header is kept and rows past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None, columns: tuple[str, ...] = COLUMNS):
        self.path = Path(path)
        if resume_step is None or not self.path.exists():
            self.columns = tuple(columns)
            self.path.write_text(",".join(self.columns) + "\n")
        else:
            rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step]  # first: a corrupt file raises
            with self.path.open(newline="") as handle:
                self.columns = tuple(next(csv.reader(handle), None) or columns)
            with self.path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns)
                writer.writeheader()
                writer.writerows({k: _fmt(r.get(k)) for k in self.columns} for r in rows)

    def append(self, **row) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"{self.path}: no column for {', '.join(sorted(unknown))}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_fmt(row.get(k)) for k in self.columns])


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv as dicts of floats (step as int; empty cells as None); UserError naming the file when
    it is not such a table (numbers only, a `step` in every row)."""
    try:
        with Path(path).open(newline="") as handle:
            rows = [{k: (None if v in ("", None) else int(float(v)) if k == "step" else float(v))
                     for k, v in row.items()} for row in csv.DictReader(handle)]
    except (UnicodeDecodeError, ValueError, TypeError, OverflowError, csv.Error) as exc:
        raise UserError(f"{path}: not a ddpmlab metrics table ({exc.__class__.__name__}); restore it or delete it"
                        ) from None
    if any(row.get("step") is None for row in rows):
        raise UserError(f"{path}: not a ddpmlab metrics table (a row without a step); restore it or delete it")
    return rows


def loss_columns(columns) -> list[str]:
    """The training losses among metrics.csv's columns: `loss` and a method's own (a GAN's loss_d and loss_g)."""
    return [c for c in columns if c == "loss" or c.startswith("loss_")]


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Path | None:
    """Every training loss (and the validation loss) against step, log-scale when all are positive, as a PNG;
    None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    columns = loss_columns(rows[0]) + ["val_loss"] if rows else []
    curves = {}
    for column in columns:
        points = [(r["step"], r[column]) for r in rows if r.get(column) is not None]
        if points:
            curves[column] = points
    if not any(column != "val_loss" for column in curves):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for column, points in curves.items():
        if column == "val_loss":
            ax.plot(*zip(*points), "o-", label="validation loss", ms=3)
        else:
            ax.plot(*zip(*points), label="train loss" if column == "loss" else column, lw=1)
    positive = all(value > 0 for points in curves.values() for _, value in points)
    ax.set(xlabel="step", ylabel="loss", yscale="log" if positive else "linear", title=Path(metrics_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return Path(out_path)
