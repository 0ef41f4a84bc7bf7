"""The one interface through which the trainer drives a baseline (VAE, DCGAN, VAE-GAN): phases of a training step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Phase:
    """One optimizer step of a training iteration: `loss` is backpropagated into parameter group `group`."""
    group: str                         # a key of the network's parameter_groups()
    loss: torch.Tensor                 # scalar, differentiable
    logs: dict[str, torch.Tensor]      # detached scalars for metrics.csv, e.g. {"loss_d": ..., "d_real": ...}


@runtime_checkable
class BaselineNet(Protocol):
    """What every baseline nn.Module provides. The caller's loop for one training iteration is

        for phase in net.training_phases(x0, generator):
            optimizers[phase.group].zero_grad(set_to_none=True)
            phase.loss.backward()
            clip_grad_norm_(groups[phase.group], ...)
            optimizers[phase.group].step()

    so code after a `yield` sees the weights updated by the previous phase.
    """

    DEFAULT_LR: ClassVar[float]                  # recommended Adam learning rate
    DEFAULT_BETAS: ClassVar[tuple[float, float]]  # recommended Adam betas
    spec: Any                                    # a dataclass: dataclasses.asdict(spec) rebuilds via from_spec

    @classmethod
    def from_spec(cls, spec: Any) -> "BaselineNet":
        """An identical, untrained module from a spec dataclass or its dict."""
        ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One list of parameters per optimizer, keyed by the names that phases use; together they cover every parameter."""
        ...

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None) -> Iterator[Phase]:
        """Yield the phases of one training iteration in order, for a batch x0 in [-1, 1] (N×C×H×W on the module's device).

        All latents and noise are drawn from `generator` (a CPU torch.Generator) with ddpmlab.devices.randn.
        """
        ...

    def generate(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """n samples in [-1, 1], N×C×H×W float32 on the module's device; the caller sets eval mode."""
        ...


def bce_with_logits(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean binary cross-entropy of (N,) logits against the label "real" (1) or "fake" (0): −log D or −log(1 − D)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
