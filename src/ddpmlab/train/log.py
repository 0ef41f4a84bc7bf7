"""The run's metrics.csv and its loss-curve plot."""

from __future__ import annotations

import csv
import io
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

from ddpmlab.errors import UserError
from ddpmlab.paths import atomic_write_bytes

# every run's (bad_steps: steps skipped for a non-finite loss or gradient since the last row); a method adds its own
COLUMNS = ("step", "loss", "val_loss", "lr", "grad_norm", "images_per_s", "wall_s", "bad_steps")


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
    resume the file's own header is kept (with any of `columns` it lacks added at the end) and rows past the resumed
    step, or a last row a crash cut short, are dropped; the file is rewritten atomically."""

    def __init__(self, path: Path, resume_step: int | None = None, columns: tuple[str, ...] = COLUMNS):
        self.path = Path(path)
        if resume_step is None or not self.path.exists():
            self.columns = tuple(columns)
            atomic_write_bytes(self.path, (",".join(self.columns) + "\n").encode())
        else:
            try:
                lines = self.path.read_text().splitlines(keepends=True)
            except UnicodeDecodeError:
                raise UserError(f"{self.path}: not a ddpmlab metrics table (not text); restore it or delete it") from None
            whole = [line for line in lines if line.endswith("\n")]  # a row cut short by a crash has no line end
            header = next(csv.reader(whole[:1]), None) or list(columns)
            self.columns = tuple(header) + tuple(c for c in columns if c not in header)
            rows = [r for r in _parse_rows(whole, self.path) if r["step"] <= resume_step]
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, self.columns)
            writer.writeheader()
            writer.writerows({k: _fmt(r.get(k)) for k in self.columns} for r in rows)
            atomic_write_bytes(self.path, text.getvalue().encode())

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
    with Path(path).open(newline="") as handle:
        return _parse_rows(handle, path)


def _parse_rows(lines, path) -> list[dict]:
    try:
        rows = [{k: (None if v in ("", None) else int(float(v)) if k == "step" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(lines)]
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
