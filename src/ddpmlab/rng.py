"""Devices and random numbers: which device to run on, where a model lives, and how noise reaches it (also when
processes split a batch); shared by the samplers, the methods, the likelihood bound and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ddpmlab.errors import UserError


@dataclass(frozen=True)
class BatchSlice:
    """Rows [start, stop) of a batch of `total` rows: the share of one process when several split a batch.

    Random draws for the batch cover all `total` rows and keep these, so the processes together see exactly the
    numbers one process would draw for the whole batch.
    """

    start: int
    stop: int
    total: int

    def __len__(self) -> int:
        return self.stop - self.start

    def take(self, rows: torch.Tensor | None) -> torch.Tensor | None:
        """This slice of a tensor whose first dimension is the whole batch (None stays None)."""
        if rows is None or (self.start == 0 and self.stop == self.total):
            return rows
        if len(rows) != self.total:
            raise ValueError(f"expected the whole batch of {self.total} rows, got {len(rows)}")
        return rows[self.start:self.stop]


def split_rows(total: int, rank: int, world_size: int) -> BatchSlice:
    """Process `rank`'s contiguous share of `total` rows split over `world_size` processes: rows
    [⌊rank·total/world⌋, ⌊(rank+1)·total/world⌋), so shares differ by at most one row and are equal when world
    divides total."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return BatchSlice(rank * total // world_size, (rank + 1) * total // world_size, total)


def model_device(model) -> torch.device:
    """The device of an nn.Module's first parameter; the CPU for plain callables or parameterless modules."""
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator seeded with `seed` on `device` when that is a GPU (draws need no host-to-device copy), else
    on the CPU."""
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype = torch.float32,
          rows: BatchSlice | None = None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (the CPU by default), then moved to `device`.

    Drawing where the generator lives keeps seeded results the same whichever device the model runs on. With
    `rows`, `shape` is that slice's (shape[0] == len(rows)): the draw covers the whole batch and keeps the slice.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    shape = _whole_batch(tuple(shape), rows)
    return to_device(_slice(torch.randn(shape, generator=generator, device=source, dtype=dtype), rows), device)


def randint(high: int, n: int, generator: torch.Generator | None, device, rows: BatchSlice | None = None
            ) -> torch.Tensor:
    """n integers uniform in 0..high−1 (int64), drawn like `randn`: on the generator's device, then moved to
    `device`; with `rows`, n == len(rows) and the draw covers the whole batch."""
    source = generator.device if generator is not None else torch.device("cpu")
    (n,) = _whole_batch((n,), rows)
    return to_device(_slice(torch.randint(0, high, (n,), generator=generator, device=source), rows), device)


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """`tensor` on `device`; a CPU tensor bound for a GPU goes through pinned memory without blocking, so the host
    does not wait for the GPU's queue to drain (a plain copy from pageable memory would)."""
    device = torch.device(device)
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _whole_batch(shape: tuple, rows: BatchSlice | None) -> tuple:
    if rows is None:
        return shape
    if shape[0] != len(rows):
        raise ValueError(f"a draw of {shape[0]} rows for a slice of {len(rows)}")
    return (rows.total, *shape[1:])


def _slice(draw: torch.Tensor, rows: BatchSlice | None) -> torch.Tensor:
    return draw if rows is None else rows.take(draw)

def resolve_device(name: str | None, setting: str = "--device") -> torch.device:
    """'auto' -> cuda when available, else cpu; a CUDA request without a GPU is a UserError that names how to
    choose the CPU (`setting`: "--device" on the command line, "train.device" in a config)."""
    fix = f"{setting}=cpu" if "." in setting else f"{setting} cpu"
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but no CUDA GPU is available; set {fix}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
