"""TensorBoard as an optional live view of a run (`train.tensorboard=true`): RUN_DIR/tensorboard holds the same
scalars as metrics.csv, one tag per column, and the sample grids. Needs the `tensorboard` package
(`pip install 'ddpmlab[tensorboard]'`); metrics.csv stays the record."""

from __future__ import annotations

from pathlib import Path

import torch

from ddpmlab import distributed
from ddpmlab.errors import UserError
from ddpmlab.images import make_grid
from ddpmlab.store.manifest import record_written

FOLDER = "tensorboard"
MISSING = "train.tensorboard=true needs the tensorboard package: pip install 'ddpmlab[tensorboard]'"


def _summary_writer_class():
    """torch's SummaryWriter; UserError when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(MISSING) from None
    return SummaryWriter


def check_tensorboard(train_cfg) -> None:
    """UserError (before any training or writing) when train.tensorboard is set but the package is missing."""
    if train_cfg.tensorboard:
        _summary_writer_class()


class TensorBoardLog:
    """Writes to RUN_DIR/tensorboard, opening its writer at the first write (again after `close`). On resume
    from step S, `purge_step` S + 1 hides the events an earlier session wrote past S, as metrics.csv drops its rows."""

    def __init__(self, run_dir: Path, resumed_from: int | None = None):
        self.folder, self.writer = Path(run_dir) / FOLDER, None
        self.purge_step = resumed_from + 1 if resumed_from is not None else None
        self.writer_class = _summary_writer_class()

    def _writer(self):
        if self.writer is None:
            before = set(self.folder.iterdir()) if self.folder.is_dir() else set()
            self.writer = self.writer_class(str(self.folder), purge_step=self.purge_step)
            self.purge_step = None
            record_written(self.folder.parent, *(set(self.folder.iterdir()) - before))  # its new events file
        return self.writer

    def scalars(self, row: dict) -> None:
        """A metrics.csv row: every column but `step` that has a value, as a scalar named like the column."""
        writer = self._writer()
        for name, value in row.items():
            if name != "step" and value is not None:
                writer.add_scalar(name, float(value), row["step"])
        writer.flush()

    def grid(self, tag: str, images: torch.Tensor, step: int) -> None:
        """Images (uint8 or [-1, 1] floats, N×C×H×W) as one grid, tiled like the PNGs in RUN_DIR/samples."""
        writer = self._writer()
        writer.add_image(tag, make_grid(images), step, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_log(run_dir: Path, train_cfg, resumed_from: int | None = None) -> TensorBoardLog | None:
    """The run's TensorBoardLog when train.tensorboard is set and this is rank 0; else None."""
    if not train_cfg.tensorboard or not distributed.current().is_main:
        return None
    return TensorBoardLog(run_dir, resumed_from)
