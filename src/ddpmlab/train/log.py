"""The run's metrics.csv and its loss-curve plot."""

from __future__ import annotations

import csv
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

COLUMNS = ("step", "loss", "val_loss", "lr", "grad_norm", "images_per_s", "wall_s")


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
    """Appends rows to RUN_DIR/metrics.csv; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None or not self.path.exists():
            self.path.write_text(",".join(COLUMNS) + "\n")
        else:
            rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            with self.path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                writer.writeheader()
                writer.writerows({k: _fmt(r.get(k)) for k in COLUMNS} for r in rows)

    def append(self, **row) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_fmt(row.get(k)) for k in COLUMNS])


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv as dicts of floats (step as int; empty cells as None)."""
    with Path(path).open() as handle:
        return [{k: (None if v in ("", None) else int(float(v)) if k == "step" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Path | None:
    """Training (and validation) loss against step, log-scale, as a PNG; None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r["loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", ms=3)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=Path(metrics_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return Path(out_path)
