"""The U-Net of Ho et al. (2020), appendix B, with optional class conditioning for classifier-free guidance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.nets.layers import AttentionBlock, Downsample, ResBlock, Upsample, group_norm, timestep_embedding


@dataclass
class UNetSpec:
    """Everything needed to rebuild a UNet; stored beside checkpoints."""

    in_channels: int = 3
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.1
    groups: int = 32
    image_size: int = 32
    num_classes: int | None = None
    prediction: str = "eps"
    # conventions of imported models (diffusers' UNet2DModel names); the defaults are Ho et al.'s and ddpmlab's
    downsample: str = "symmetric"  # or "tf-same": pad right and bottom by one (Ho et al.'s TF code)
    norm_eps: float = 1e-6
    flip_sin_to_cos: bool = False
    freq_shift: float = 1


class UNet(nn.Module):
    """ε-, x0- or v-prediction U-Net: `model(x_t, t, labels=None)` -> tensor shaped like x_t.

    x_t: N×C×H×W float; t: (N,) integer timesteps; labels: (N,) ints in [0, num_classes], where the
    value `num_classes` is the "null" label used for classifier-free guidance (and None means null).
    Inputs whose size is not a multiple of 2^(levels−1) (28×28) are zero-padded inside and cropped back.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions=(16,),
        dropout: float = 0.1,
        groups: int = 32,
        image_size: int = 32,
        num_classes: int | None = None,
        prediction: str = "eps",
        downsample: str = "symmetric",
        norm_eps: float = 1e-6,
        flip_sin_to_cos: bool = False,
        freq_shift: float = 1,
    ):
        super().__init__()
        self.spec = UNetSpec(in_channels, channels, list(channel_mult), num_res_blocks, list(attention_resolutions),
                             dropout, groups, image_size, num_classes, prediction, downsample, norm_eps,
                             flip_sin_to_cos, freq_shift)
        eps = norm_eps
        self.prediction = prediction
        self.num_classes = num_classes
        self.multiple = 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        resolution = -(-image_size // self.multiple) * self.multiple  # the padded size
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        ch = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(_Stage(ResBlock(ch, channels * mult, emb_dim, dropout, groups, eps),
                                        AttentionBlock(channels * mult, groups, eps)
                                        if resolution in attention_resolutions else None))
                ch = channels * mult
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(ch, downsample))
                skips.append(ch)
                resolution //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, groups, eps), AttentionBlock(ch, groups, eps),
                                  ResBlock(ch, ch, emb_dim, dropout, groups, eps)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(_Stage(ResBlock(ch + skips.pop(), channels * mult, emb_dim, dropout, groups, eps),
                                      AttentionBlock(channels * mult, groups, eps)
                                      if resolution in attention_resolutions else None))
                ch = channels * mult
            if level != 0:
                self.up.append(Upsample(ch))
                resolution *= 2
        self.norm_out = group_norm(ch, groups, eps)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_label(self) -> int | None:
        """The label index meaning "no class" (classifier-free guidance), or None if unconditional."""
        return self.num_classes

    @classmethod
    def from_spec(cls, spec: UNetSpec | dict) -> "UNet":
        """Rebuild from a UNetSpec or its dict."""
        return cls(**(asdict(spec) if isinstance(spec, UNetSpec) else spec))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h_in, w_in = x.shape[-2:]
        pad_h, pad_w = -h_in % self.multiple, -w_in % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        spec = self.spec
        emb = self.time_mlp(timestep_embedding(t, spec.channels, flip_sin_to_cos=spec.flip_sin_to_cos,
                                               freq_shift=spec.freq_shift).to(x.dtype))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Stage) else layer(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, _Stage) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h_in, :w_in]


class _Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, block: ResBlock, attention: AttentionBlock | None):
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.block(x, emb)
        return self.attention(x) if self.attention is not None else x
