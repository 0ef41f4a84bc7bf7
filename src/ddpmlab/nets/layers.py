"""Blocks shared by the networks: timestep embedding, normalisation, residual and attention blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0, flip_sin_to_cos: bool = False,
                       freq_shift: float = 1) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps -> (N, dim) float32 (Vaswani et al. 2017, as in Ho et al.):
    [sin(t·f_i), cos(t·f_i)] with f_i = max_period^(−i/(dim/2 − freq_shift)); [cos, sin] when flip_sin_to_cos.
    Ho et al.'s is freq_shift 1, no flip; diffusers' UNet2DModel names the same two options."""
    half = dim // 2
    exponents = -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32)
    args = t.float()[:, None] * torch.exp(exponents / max(half - freq_shift, 1))[None]
    halves = [torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)]
    return F.pad(torch.cat(halves, dim=1), (0, dim % 2))


def group_norm(channels: int, groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with `groups` groups (Ho et al. use 32), fewer when the channel count is not divisible."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=eps)


class ResBlock(nn.Module):
    """Ho et al. residual block: GN-SiLU-conv, + projected time embedding, GN-SiLU-dropout-conv, skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups, eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch, groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # the adds are in place: a convolution's backward needs its input, never its output
        h = self.conv1(F.silu(self.norm1(x))).add_(self.emb(F.silu(emb))[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h.add_(self.skip(x))


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (Ho et al., at 16×16)."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm = group_norm(channels, groups, eps)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # the 1×1 convolutions as matmuls over the h·w positions (same weights, same maths), in the
        # (positions, channels) layout that the fused attention kernels take without copies
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias).split(c, dim=-1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        out = F.linear(out, self.proj.weight.flatten(1), self.proj.bias)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


DOWNSAMPLE_PADDINGS = ("symmetric", "tf-same")


class Downsample(nn.Module):
    """Stride-2 3×3 convolution, its input padded by one on every side ("symmetric"), or on the right and bottom
    only ("tf-same": TensorFlow's SAME padding for even sizes, as in Ho et al.'s code and diffusers'
    downsample_padding=0)."""

    def __init__(self, channels: int, padding: str = "symmetric"):
        super().__init__()
        if padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"padding must be one of {DOWNSAMPLE_PADDINGS}, got {padding!r}")
        self.tf_same = padding == "tf-same"
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if self.tf_same else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.tf_same else x)


def upsampling_taps() -> torch.Tensor:
    """(16, 9) 0/1 matrix taking a 3×3 kernel's taps to those of the 4×4 stride-2 transposed convolution that equals
    nearest ×2 upsampling followed by that 3×3 convolution (padding 1). Along each axis an output row reads two input
    rows, with the taps (w2, w1 + w2, w0 + w1, w0) at transposed-kernel positions 0..3."""
    per_axis = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return torch.kron(per_axis, per_axis)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 convolution (Ho et al.), computed as the equal 4×4 stride-2 transposed
    convolution: the same weights and maths, 4 instead of 9 multiply-adds per output, no upsampled copy."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.register_buffer("taps", upsampling_taps(), persistent=False)  # a constant, kept beside the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight
        out_ch, in_ch = weight.shape[:2]
        with torch.autocast("cuda", enabled=False):  # the summed taps in float32 under bf16 training (CUDA only)
            kernel = (weight.reshape(out_ch * in_ch, 9) @ self.taps.T).view(out_ch, in_ch, 4, 4)
        return F.conv_transpose2d(x, kernel.transpose(0, 1), self.conv.bias, stride=2, padding=1)
