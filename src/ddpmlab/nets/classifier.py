"""A small image classifier whose penultimate layer gives the features of the fast "FD" distance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.nets.layers import group_norm


@dataclass
class ClassifierSpec:
    """Everything needed to rebuild a Classifier; stored in its weights file."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    feature_dim: int = 128
    groups: int = 8


class ConvBlock(nn.Module):
    """Two GN-SiLU 3×3 convolutions, then 2×2 average pooling (halves the size, floor)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm1 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.norm1(self.conv1(x)))
        x = F.silu(self.norm2(self.conv2(x)))
        return F.avg_pool2d(x, 2)


class Classifier(nn.Module):
    """CNN on [-1, 1] images N×C×H×W: `features(x)` -> N×feature_dim, `forward(x)` -> N×num_classes logits.

    Conv blocks (GroupNorm, SiLU, pooling), global average pooling, one hidden layer (the features), a
    linear head. GroupNorm has no batch statistics, so features do not depend on the batch or on train/eval mode.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 widths=(32, 64, 128), feature_dim: int = 128, groups: int = 8):
        super().__init__()
        self.spec = ClassifierSpec(in_channels, image_size, num_classes, list(widths), feature_dim, groups)
        self.feature_dim, self.num_classes = feature_dim, num_classes
        channels = [in_channels, *widths]
        self.blocks = nn.Sequential(*(ConvBlock(a, b, groups) for a, b in zip(channels[:-1], channels[1:])))
        self.hidden = nn.Linear(widths[-1], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    @classmethod
    def from_spec(cls, spec: ClassifierSpec | dict) -> "Classifier":
        """Rebuild from a ClassifierSpec or its dict."""
        return cls(**(asdict(spec) if isinstance(spec, ClassifierSpec) else spec))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, float N×feature_dim on x's device."""
        pooled = self.blocks(x).mean(dim=(2, 3))
        return F.silu(self.hidden(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
