"""Data parallelism over the processes torchrun starts: the process group, each process's share of a batch,
gradients and logged means averaged over the processes, rank 0 as the only writer.

Every process holds the same seeded generator and draws the whole global batch (data order, flips, class dropout,
t, noise, latents), keeping its own contiguous slice of rows, so N processes see exactly the numbers one process
would at the same global batch. Gradients are averaged by one explicit all-reduce per phase after `backward`
(not DistributedDataParallel): it fits every method alike, the GANs' several optimizers and partial forward passes
included, and lets rank 0 run validation and sampling alone, since no forward pass takes part in a collective.

With one process (no torchrun, or WORLD_SIZE=1) `Processes()` has world_size 1 and every function here returns
at once, without any collective.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ddpmlab.errors import UserError
from ddpmlab.rng import BatchSlice, split_rows

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one run: its rank, their number, its rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory, logs and prints."""
        return self.rank == 0

    def rows(self, total: int) -> BatchSlice:
        """This process's contiguous share of a batch of `total` rows (ddpmlab.rng.split_rows)."""
        return split_rows(total, self.rank, self.world_size)


def current() -> Processes:
    """The processes of the initialised default process group (torchrun's ranks), else this process alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return Processes()
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_processes(environ=os.environ) -> int:
    """How many processes torchrun started for this run (its WORLD_SIZE); 1 without torchrun."""
    try:
        return int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


@contextlib.contextmanager
def process_group() -> Iterator[Processes]:
    """Inside: the default process group of the processes torchrun started (its RANK, WORLD_SIZE, LOCAL_RANK and
    rendezvous), NCCL for CUDA tensors and gloo for CPU tensors, each process's current GPU cuda:LOCAL_RANK; only
    gloo when this machine has fewer GPUs than processes (they then train on the CPU). Destroyed on leaving.
    Without torchrun, or with one process or a group already set up: nothing."""
    if launched_processes() <= 1 or dist.is_initialized():
        yield current()
        return
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run one process (without torchrun)")
    local_rank, on_this_machine = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    backend = "gloo"
    if dist.is_nccl_available() and 0 < on_this_machine <= torch.cuda.device_count():  # the same on every rank
        backend = "cpu:gloo,cuda:nccl"  # gloo carries the CPU tensors: logged means, flags, gathered samples
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    try:
        yield current()
        dist.barrier()  # every rank's work done before any tears down (a gloo thread left running aborts at exit)
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, processes: Processes) -> torch.device:
    """The device this process computes on: cuda:LOCAL_RANK for a CUDA device when there are several processes
    (whatever index was asked for), `device` itself otherwise. UserError when this machine has too few GPUs."""
    if processes.world_size == 1 or device.type != "cuda":
        return device
    if processes.local_rank >= torch.cuda.device_count():
        raise UserError(f"process {processes.local_rank} of this machine needs cuda:{processes.local_rank}, but it has "
                        f"{torch.cuda.device_count()} GPU(s); start at most that many (torchrun --nproc-per-node)")
    return torch.device("cuda", processes.local_rank)


def batch_rows(batch_size: int, processes: Processes, setting: str = "train.batch_size") -> BatchSlice:
    """This process's rows of the global batch `batch_size`; UserError unless the processes share it equally (equal
    shares make the mean of their mean gradients the global batch's mean gradient)."""
    if batch_size % processes.world_size:
        raise UserError(f"{setting}={batch_size} is the global batch and must divide evenly over the "
                        f"{processes.world_size} processes; use a multiple of {processes.world_size}")
    return processes.rows(batch_size)


def average_gradients(parameters: Iterable[nn.Parameter], processes: Processes) -> None:
    """Replace every gradient of `parameters` by its mean over the processes: one all-reduce of them all, flattened.
    Every process must pass the same parameters with gradients (the same code path gives them)."""
    if processes.world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= processes.world_size
    for grad, mean in zip(grads, flat.split([grad.numel() for grad in grads])):
        grad.copy_(mean.view_as(grad))


def mean_over_processes(values: dict[str, float], processes: Processes) -> dict[str, float]:
    """Each value's mean over the processes (every process passes the same names): one all-reduce on the CPU."""
    if processes.world_size == 1 or not values:
        return values
    names = sorted(values)
    totals = torch.tensor([values[name] for name in names], dtype=torch.float64)
    dist.all_reduce(totals)
    return {name: total / processes.world_size for name, total in zip(names, totals.tolist())}


def any_process(flag: bool, processes: Processes) -> bool:
    """True on every process when `flag` is true on any of them (e.g. a stop request that reached only some)."""
    if processes.world_size == 1:
        return flag
    flags = torch.tensor([int(flag)])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags.item())


def on_main(action: Callable[[], T], processes: Processes) -> T | None:
    """Run `action` on rank 0 alone once every process has got here; a UserError it raises is raised on every
    process, so that none goes on waiting for a rank that stopped. Returns its value on rank 0, None elsewhere."""
    if processes.world_size == 1:
        return action()
    dist.barrier()
    result, error = None, [None]
    if processes.is_main:
        try:
            result = action()
        except UserError as exc:
            error = [str(exc)]
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise UserError(error[0])
    return result


def from_main(value: T, processes: Processes) -> T:
    """Rank 0's `value` on every process (a picklable object)."""
    if processes.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: T, processes: Processes) -> list[T] | None:
    """[value of rank 0, value of rank 1, ...] on rank 0 (picklable objects, e.g. CPU tensors), None elsewhere."""
    if processes.world_size == 1:
        return [value]
    gathered = [None] * processes.world_size if processes.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


# -- torch's global RNG, which dropout draws from: one stream per process ----------------------------------------
def rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for process `rank`'s global RNG at `step`, unrelated to the run's seed and to the other ranks'."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_other_ranks(seed: int, step: int, processes: Processes) -> None:
    """Ranks > 0 reseed torch's global RNGs (CPU and CUDA) by rank_seed, so that their dropout differs from rank
    0's, which keeps the run's own stream (the one a checkpoint stores as "torch")."""
    if processes.rank > 0:
        torch.manual_seed(rank_seed(seed, processes.rank, step))


def gather_rng_states(device: torch.device, processes: Processes) -> dict[str, torch.Tensor]:
    """On rank 0, the global RNG states of the ranks > 0 for a checkpoint: {"torch.rank1": ..., "cuda.rank1": ...}
    (CUDA on a CUDA device); {} elsewhere and with one process."""
    if processes.world_size == 1:
        return {}
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    gathered = gather_to_main(state, processes)
    if not processes.is_main:
        return {}
    return {f"{name}.rank{rank}": tensor for rank, states in enumerate(gathered) if rank > 0
            for name, tensor in states.items()}


def restore_rng_state(rng: dict[str, torch.Tensor], seed: int, step: int, device: torch.device,
                      processes: Processes) -> None:
    """Ranks > 0 take their own global RNG states from a checkpoint's `rng` (gather_rng_states), or reseed by
    rank_seed when it holds none for them (a checkpoint of fewer processes); rank 0 restores "torch" itself."""
    if processes.rank == 0:
        return
    if f"torch.rank{processes.rank}" not in rng:
        seed_other_ranks(seed, step, processes)
        return
    torch.set_rng_state(rng[f"torch.rank{processes.rank}"])
    if device.type == "cuda" and f"cuda.rank{processes.rank}" in rng:
        torch.cuda.set_rng_state(rng[f"cuda.rank{processes.rank}"], device)
