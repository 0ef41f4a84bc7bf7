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


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (the CPU by default), then moved to `device`.

    Drawing where the generator lives keeps seeded results the same whichever device the model runs on.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
