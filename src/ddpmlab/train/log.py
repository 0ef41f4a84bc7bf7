"""The run's notes (run.log), the window of steps behind each metrics.csv row, and the loss-curve plot (loss.png)."""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from ddpmlab.errors import DdpmlabWarning
from ddpmlab.store.metrics_csv import loss_columns, read_metrics

# scores of the EMA network's samples during training (train.eval_metrics), on the rows of the steps evaluated
QUALITY_COLUMNS = {"fd": "FD (classifier)", "fid": "FID (Inception)"}


class RunLog:
    """RUN_DIR/run.log: timestamped notes of every session (device, sizes, warnings); warnings are also issued as
    DdpmlabWarnings."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def note(self, message: str, warning: bool = False) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.path.open("a") as handle:
            handle.write(f"{stamp} {'warning: ' if warning else ''}{message}\n")
        if warning:
            warnings.warn(message, DdpmlabWarning, stacklevel=2)


def finished_note(step: int) -> str:
    """run.log's last note of a session that trained to train.steps and wrote its last grid and plot."""
    return f"finished at step {step}"


def finished_at(path: Path, step: int) -> bool:
    """Whether the run.log at `path` ends with `finished_note(step)`: the run did all its work up to `step`."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return False
    return bool(lines) and lines[-1].endswith(" " + finished_note(step))


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Path | None:
    """Every training loss (and the validation loss) against step, log-scale when all are positive, and the
    scores of evaluation during training (QUALITY_COLUMNS) on a second axis at the right, as a PNG; None when
    there is nothing to plot."""
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
    handles, labels = ax.get_legend_handles_labels()
    scores = {column: [(r["step"], r[column]) for r in rows if r.get(column) is not None] for column in QUALITY_COLUMNS}
    scores = {column: points for column, points in scores.items() if points}
    if scores:
        right = ax.twinx()
        for (column, points), style in zip(scores.items(), ("s--", "^:")):
            right.plot(*zip(*points), style, color="tab:red" if column == "fd" else "tab:purple", ms=4, lw=1,
                       label=f"{QUALITY_COLUMNS[column]}, EMA samples")
        right.set_ylabel(" / ".join(column.upper() for column in scores) + " of samples (lower is better)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize="small")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return Path(out_path)


class LogWindow:
    """The mean of every logged value over the steps that logged it (an LDM's stages log different values) and pure
    training throughput (no validation, grids or checkpoints) since the last log line. The sums stay on the device
    (float64, adding as Python floats would) until `flush` reads them, so a step never waits for the device."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.images, self.seconds = 0, 0, 0.0

    def add(self, logs: dict[str, torch.Tensor], images: int, seconds: float) -> None:
        for name, value in logs.items():
            value = value.detach().double()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1
        self.steps, self.images, self.seconds = self.steps + 1, self.images + images, self.seconds + seconds

    def flush(self) -> tuple[dict[str, float], float]:
        """({name: mean over the window}, images per second) of the window, then start a new one. Reading the sums
        waits for the window's queued steps, and that wait counts as their time."""
        start = time.perf_counter()
        totals = {name: total.item() for name, total in self.sums.items()}
        seconds = self.seconds + time.perf_counter() - start
        result = ({name: total / self.counts[name] for name, total in totals.items()}, self.images / max(seconds, 1e-9))
        self.__init__()
        return result
