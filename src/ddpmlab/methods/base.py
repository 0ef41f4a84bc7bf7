"""The one interface through which the trainer, sampling and eval drive every method (DDPM, VAE, DCGAN, VAE-GAN):
phases of a training step, a validation loss where there is one, and sampling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.config import check_baseline_section
from ddpmlab.rng import BatchSlice


@dataclass
class Phase:
    """One optimizer step of a training iteration: `loss` is backpropagated into parameter group `group`."""
    group: str                         # a key of the network's parameter_groups()
    loss: torch.Tensor                 # scalar, differentiable
    logs: dict[str, torch.Tensor]      # detached scalars for metrics.csv, e.g. {"loss_d": ..., "d_real": ...}


@runtime_checkable
class MethodNet(Protocol):
    """What every method's nn.Module provides. The caller's loop for one training iteration is

        for phase in net.training_phases(x0, generator, labels, rows):
            optimizers[phase.group].zero_grad(set_to_none=True)
            phase.loss.backward()
            clip_grad_norm_(groups[phase.group], ...)
            optimizers[phase.group].step()

    so code after a `yield` sees the weights updated by the previous phase. When several processes split a batch
    (ddpmlab.distributed), each passes its slice `rows` (a ddpmlab.rng.BatchSlice) and averages the
    gradients of a phase's group over the processes after `backward`. Its state_dict() is what a
    checkpoint holds; its `spec` (a dataclass, or None for a custom backbone) is stored beside it.
    """

    SINGLE_PASS: ClassVar[bool]                  # True: `generate(n, generator)` draws in one network pass
    DEFAULT_LR: ClassVar[float]                  # recommended Adam learning rate
    DEFAULT_BETAS: ClassVar[tuple[float, float]]  # recommended Adam betas (the trainer's β2 is train.adam_beta2)
    LOGS: tuple[str, ...]                        # the phases' logs, in metrics.csv's order (an LDM's: its config's)
    spec: Any
    image_shape: tuple[int, int, int]            # (C, H, W) of the images it trains on and generates
    num_classes: int | None                      # classes of a conditional model; None when unconditional

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One list of parameters per optimizer, keyed by the names that phases use; together they cover every parameter."""
        ...

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """Yield the phases of one training iteration in order, for a batch x0 in [-1, 1] (N×C×H×W on the module's
        device) and, for a conditional model, its labels.

        All latents and noise are drawn from `generator` (on the CPU, or on the GPU in a CUDA run) with
        ddpmlab.rng.randn and randint, on the generator's device, passing `rows`: with it, x0 is that slice of a
        batch split over processes, and each draw is the slice's share of the whole batch's (every process holds the
        same generator). Losses are means over x0's rows.
        """
        ...

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The method's held-out loss on a batch (a scalar), or None when it has none (the GANs); the caller sets
        eval mode and no_grad."""
        ...

    def generate(self, n: int, generator: torch.Generator | None, *args, rows: BatchSlice | None = None,
                 **kwargs) -> torch.Tensor:
        """n samples in [-1, 1], N×C×H×W float32 on the module's device; the caller sets eval mode.
        Call it through ddpmlab.methods.sample_images, which knows what each kind of method takes."""
        ...


@runtime_checkable
class BaselineNet(MethodNet, Protocol):
    """A baseline (VAE, DCGAN, VAE-GAN): a MethodNet that is rebuilt from its spec alone and samples in one pass."""

    @classmethod
    def from_spec(cls, spec: Any) -> "BaselineNet":
        """An identical, untrained module from its spec dict (SectionNetwork.spec)."""
        ...


def unconditional(labels: torch.Tensor | None, name: str) -> None:
    """The baselines are unconditional: class labels reaching one are a bug (the config refuses model.conditional)."""
    if labels is not None:
        raise ValueError(f"{name} is unconditional and takes no labels")


def bce_with_logits(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean binary cross-entropy of (N,) logits against the label "real" (1) or "fake" (0): −log D or −log(1 − D)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


OPTIMIZER_KEYS = ("lr", "beta1")  # the keys of a baseline's config section that are not its network's arguments


class SectionNetwork(nn.Module):
    """A baseline whose one declaration is its config section (SECTION, of type SECTION_TYPE): built from the section
    (with network keys on top), checked by config.check_baseline_section, stored in checkpoints as `spec` (the image
    shape and the section's network keys) and rebuilt from that spec by `from_spec`."""

    SECTION: ClassVar[str]  # the config section's name, which is also the method's (config.method)
    SECTION_TYPE: ClassVar[type]

    def __init__(self, channels: int, image_size: int, section: Any | None, network: dict):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        section = section or self.SECTION_TYPE()
        unknown = set(network) - {f.name for f in fields(section)}
        if unknown:
            raise TypeError(f"unknown {type(section).__name__} options: {', '.join(sorted(unknown))}")
        self.config = replace(section, **network)
        check_baseline_section(self.SECTION, self.config)

    @classmethod
    def from_spec(cls, spec: dict) -> "SectionNetwork":
        """An identical, untrained network from its spec dict."""
        network = {key: value for key, value in spec.items() if key not in ("channels", "image_size")}
        return cls(spec["channels"], spec["image_size"], **network)

    @property
    def spec(self) -> dict:
        """What rebuilds this network (a checkpoint's model_spec): the image shape and its section's network keys."""
        return {"channels": self.channels, "image_size": self.image_size,
                **{key: value for key, value in asdict(self.config).items() if key not in OPTIMIZER_KEYS}}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size
