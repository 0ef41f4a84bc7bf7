"""Numerical faults: a step whose loss or gradient is not finite is skipped (no optimizer step, no EMA update, its
batch-norm statistics undone), counted, and stops the run after `train.max_bad_steps` of them in a row."""

from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab import distributed
from ddpmlab.errors import UserError


class StepHealth:
    """Counts skipped steps: in a row (for the limit) and since the last metrics row (metrics.csv's bad_steps)."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.in_a_row = 0
        self.since_last_row = 0
        self.last = ""  # what the last bad step had, e.g. "a loss of nan in the generator phase"

    def checked_grad_norm(self, loss: torch.Tensor, grad_norm: torch.Tensor, group: str,
                          processes: distributed.Processes = distributed.Processes()) -> float | None:
        """The phase's gradient norm as a float, or None when it or the loss is not finite (one host sync); with
        several processes, None on all of them when the loss of any is not finite (their gradients are averaged, so
        they agree on the norm), so that they skip the same steps."""
        loss_value, norm = torch.stack([loss.detach().float(), grad_norm.detach().float()]).tolist()
        finite_here = math.isfinite(loss_value) and math.isfinite(norm)
        if not distributed.any_process(not finite_here, processes):
            return norm
        if not math.isfinite(loss_value):
            self.last = f"a loss of {loss_value:g} in the {group} phase"
        elif not math.isfinite(norm):
            self.last = f"a gradient norm of {norm:g} in the {group} phase"
        else:
            self.last = f"a non-finite loss or gradient on another process in the {group} phase"
        return None

    def good_step(self) -> None:
        self.in_a_row = 0

    def bad_step(self, step: int) -> str:
        """Count a skipped step (the step-th); returns what to note. UserError once max_bad_steps came in a row."""
        self.in_a_row += 1
        self.since_last_row += 1
        if self.in_a_row >= self.max_bad_steps:
            raise UserError(f"{self.in_a_row} training steps in a row had a non-finite loss or gradient (the last at "
                            f"step {step}: {self.last}), train.max_bad_steps={self.max_bad_steps}; the run stopped, "
                            f"its checkpoints hold finite weights. Lower the learning rate, set train.grad_clip or check "
                            f"the data, then `ddpmlab train --resume` the run")
        return f"step {step} skipped: {self.last} (no optimizer step, no EMA update)"

    def flush(self) -> int:
        """Skipped steps since the last call (for a metrics row)."""
        count, self.since_last_row = self.since_last_row, 0
        return count


def copy_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the module's buffers (batch-norm running statistics and counts); [] for a network without."""
    return [buffer.detach().clone() for buffer in model.buffers()]


def restore_buffers(model: nn.Module, saved: list[torch.Tensor]) -> None:
    """Put back the buffers `copy_buffers` copied (a skipped step's forward passes may have made them non-finite)."""
    with torch.no_grad():
        for buffer, copy in zip(model.buffers(), saved):
            buffer.copy_(copy)
