"""Where a model lives and how noise reaches it: shared by the samplers and the likelihood bound."""

from __future__ import annotations

import torch
from torch import nn


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


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (the CPU by default), then moved to `device`.

    Drawing where the generator lives keeps seeded results the same whichever device the model runs on.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    return to_device(torch.randn(shape, generator=generator, device=source, dtype=dtype), device)


def randint(high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """int64 values uniform in 0..high−1, drawn like `randn`: on the generator's device, then moved to `device`."""
    source = generator.device if generator is not None else torch.device("cpu")
    return to_device(torch.randint(0, high, shape, generator=generator, device=source), device)


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """`tensor` on `device`; a CPU tensor bound for a GPU goes through pinned memory without blocking, so the host
    does not wait for the GPU's queue to drain (a plain copy from pageable memory would)."""
    device = torch.device(device)
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
