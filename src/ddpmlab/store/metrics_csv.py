"""RUN_DIR/metrics.csv: one row per logged step, written atomically and read back."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ddpmlab.errors import UserError
from ddpmlab.paths import atomic_write_bytes

# every run's (other_load: the 1-minute load average beyond torch's threads, other work sharing the CPU while the row's
# steps ran; bad_steps: steps skipped for a non-finite loss or gradient since the last row); a method adds its own
COLUMNS = ("step", "loss", "val_loss", "lr", "grad_norm", "images_per_s", "wall_s", "other_load", "bad_steps")


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.csv, whose columns are fixed per run: `columns` when the file is new; on
    resume the file's own header is kept (with any of `columns` it lacks added at the end, e.g. `fd` when evaluation
    is switched on) and rows past the resumed step, or a last row a crash cut short, are dropped; the file is
    rewritten atomically. `mirror`, when set, gets every row too (its `scalars(row)`: TensorBoard)."""

    def __init__(self, path: Path, resume_step: int | None = None, columns: tuple[str, ...] = COLUMNS, mirror=None):
        self.path, self.mirror = Path(path), mirror
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
        if self.mirror is not None:
            self.mirror.scalars(row)

    def close(self) -> None:
        """Close the mirror (the CSV is closed after every row)."""
        if self.mirror is not None:
            self.mirror.close()


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
