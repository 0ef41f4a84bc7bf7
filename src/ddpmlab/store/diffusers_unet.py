"""diffusers' UNet2DModel and ddpmlab's UNet, one to one: the spec of a UNet2DModel config and back, and each
weight's name in the other's state dict. Made of DownBlock2D/AttnDownBlock2D/UpBlock2D/AttnUpBlock2D with
single-head attention (and optionally class embeddings); what has no equivalent is a UserError naming it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddpmlab.errors import UserError
from ddpmlab.nets import UNetSpec

DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> has attention
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
# UNet2DModel's defaults, for keys a config.json leaves out
UNET_DEFAULTS = {"in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
                 "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
                 "mid_block_type": "UNetMidBlock2D",
                 "layers_per_block": 2, "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv",
                 "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8,
                 "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
                 "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
                 "num_class_embeds": None}
# settings of UNet2DModel that ddpmlab's UNet has only at this value
UNET_FIXED = {"center_input_sample": False, "time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2D",
              "mid_block_scale_factor": 1, "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu",
              "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None}


def unet_spec(config: dict, prediction: str = "eps") -> UNetSpec:
    """The UNetSpec of a UNet2DModel config; UserError naming the first setting ddpmlab's UNet has no equivalent for."""
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise UserError(f"{name} has no ddpmlab equivalent; ddpmlab imports diffusers' UNet2DModel")
    c = {**UNET_DEFAULTS, **config}
    for key, value in UNET_FIXED.items():
        if c[key] != value:
            raise UserError(f"UNet2DModel {key}={c[key]!r} has no ddpmlab equivalent (only {value!r})")
    down, up = list(c.get("down_block_types") or []), list(c.get("up_block_types") or [])
    widths = [int(w) for w in c.get("block_out_channels") or []]
    for block in down + up:
        if block not in DOWN_BLOCKS and block not in UP_BLOCKS:
            raise UserError(f"UNet2DModel block type {block} has no ddpmlab equivalent (it takes "
                            f"{', '.join([*DOWN_BLOCKS, *UP_BLOCKS])})")
    if not widths or not (len(down) == len(up) == len(widths)) or any(b not in DOWN_BLOCKS for b in down) \
            or any(b not in UP_BLOCKS for b in up):
        raise UserError("UNet2DModel config: down_block_types, up_block_types and block_out_channels must list the "
                        "levels, down blocks first")
    attention = [DOWN_BLOCKS[b] for b in down]
    if attention != [UP_BLOCKS[b] for b in reversed(up)]:
        raise UserError("UNet2DModel with attention at different levels going down and up has no ddpmlab equivalent")
    base = widths[0]
    if any(w % base for w in widths):
        raise UserError(f"UNet2DModel block_out_channels {widths}: ddpmlab needs multiples of the first")
    size = c.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) and len(set(size)) == 1 else size
    multiple = 2 ** (len(widths) - 1)
    if not isinstance(size, int) or size % multiple:
        raise UserError(f"UNet2DModel sample_size={c.get('sample_size')!r}: ddpmlab needs one square size, a multiple "
                        f"of {multiple}")
    groups = c["norm_num_groups"]
    if not isinstance(groups, int) or any(w % groups for w in widths) \
            or c["attn_norm_num_groups"] not in (None, groups):
        raise UserError(f"UNet2DModel norm_num_groups={groups!r}: ddpmlab needs one group count dividing every width")
    head = c["attention_head_dim"]
    heads = [w for w, a in zip(widths, attention) if a] + [widths[-1]]
    if head is not None and any(w != head for w in heads):
        raise UserError(f"UNet2DModel attention_head_dim={head}: multi-head attention has no ddpmlab equivalent "
                        f"(single head: attention_head_dim null or the width)")
    if c["out_channels"] != c["in_channels"]:
        raise UserError(f"UNet2DModel out_channels={c['out_channels']} differs from in_channels={c['in_channels']}; "
                        f"ddpmlab predicts one value per input channel (no learned variance)")
    if c["time_embedding_dim"] not in (None, 4 * base):
        raise UserError(f"UNet2DModel time_embedding_dim={c['time_embedding_dim']}: ddpmlab's is 4 × {base}")
    classes = c["num_class_embeds"]
    if classes is not None and (not isinstance(classes, int) or classes < 2):
        raise UserError(f"UNet2DModel num_class_embeds={classes!r}: ddpmlab needs the classes and a null label (>= 2)")
    padding = c["downsample_padding"]
    if padding not in (0, 1):
        raise UserError(f"UNet2DModel downsample_padding={padding!r} has no ddpmlab equivalent (0 or 1)")
    return UNetSpec(in_channels=c["in_channels"], channels=base, channel_mult=[w // base for w in widths],
                    num_res_blocks=c["layers_per_block"],
                    attention_resolutions=[size // 2**level for level, a in enumerate(attention) if a],
                    dropout=float(c["dropout"]), groups=groups, image_size=size,
                    num_classes=classes - 1 if classes else None, prediction=prediction,
                    downsample="tf-same" if padding == 0 else "symmetric", norm_eps=float(c["norm_eps"]),
                    flip_sin_to_cos=bool(c["flip_sin_to_cos"]), freq_shift=c["freq_shift"])


def unet_config(spec: UNetSpec) -> dict:
    """The UNet2DModel config.json of a ddpmlab UNet; UserError naming what UNet2DModel cannot express."""
    levels = len(spec.channel_mult)
    widths = [spec.channels * m for m in spec.channel_mult]
    if any(w % spec.groups for w in widths):
        raise UserError(f"group norm with {spec.groups} groups over {widths} channels: ddpmlab uses fewer groups where "
                        f"a width is not a multiple; UNet2DModel cannot")
    if spec.image_size % 2 ** (levels - 1):
        raise UserError(f"image size {spec.image_size} is not a multiple of {2 ** (levels - 1)}: ddpmlab pads the "
                        f"input inside the network; UNet2DModel cannot")
    attention = [spec.image_size // 2**level in spec.attention_resolutions for level in range(levels)]
    config = {
        "_class_name": "UNet2DModel", "sample_size": spec.image_size, "in_channels": spec.in_channels,
        "out_channels": spec.in_channels, "center_input_sample": False, "time_embedding_type": "positional",
        "freq_shift": spec.freq_shift, "flip_sin_to_cos": spec.flip_sin_to_cos,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "block_out_channels": widths, "layers_per_block": spec.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": 0 if spec.downsample == "tf-same" else 1, "dropout": spec.dropout, "act_fn": "silu",
        "attention_head_dim": None, "norm_num_groups": spec.groups, "norm_eps": spec.norm_eps,
        "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
        "num_class_embeds": spec.num_classes + 1 if spec.num_classes else None,
    }
    return config


@dataclass(frozen=True)
class UNetNames:
    """How a format names the modules of a Ho et al. U-Net: format strings over `level` (the resolution level),
    `j` (the block within it) and `i` (the up path's position, deepest level first)."""

    time: tuple[str, str]  # the timestep MLP's two linear layers
    label: str | None  # the class embedding, where the format has one
    down_res: str
    down_attn: str
    downsample: str
    mid: tuple[str, str, str]  # residual block, attention, residual block
    up_res: str
    up_attn: str
    upsample: str
    norm_out: str


DIFFUSERS_NAMES = UNetNames(
    time=("time_embedding.linear_1", "time_embedding.linear_2"), label="class_embedding",
    down_res="down_blocks.{level}.resnets.{j}", down_attn="down_blocks.{level}.attentions.{j}",
    downsample="down_blocks.{level}.downsamplers.0.conv",
    mid=("mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"),
    up_res="up_blocks.{i}.resnets.{j}", up_attn="up_blocks.{i}.attentions.{j}", upsample="up_blocks.{i}.upsamplers.0.conv",
    norm_out="conv_norm_out")


def module_pairs(spec: UNetSpec, names: UNetNames = DIFFUSERS_NAMES) -> list[tuple[str, str, str]]:
    """(ddpmlab module, the format's module, kind) for every module with weights; kind "res" (a residual block),
    "attn" (self-attention) or "plain" (a convolution, linear, norm or embedding: the same parameter names)."""
    levels, blocks = len(spec.channel_mult), spec.num_res_blocks
    attention = [spec.image_size // 2**level in spec.attention_resolutions for level in range(levels)]
    pairs = [("conv_in", "conv_in", "plain"), ("time_mlp.0", names.time[0], "plain"),
             ("time_mlp.2", names.time[1], "plain")]
    if spec.num_classes:
        pairs.append(("label_emb", names.label, "plain"))
    k = 0
    for level in range(levels):
        for j in range(blocks):
            pairs.append((f"down.{k}.block", names.down_res.format(level=level, j=j), "res"))
            if attention[level]:
                pairs.append((f"down.{k}.attention", names.down_attn.format(level=level, j=j), "attn"))
            k += 1
        if level != levels - 1:
            pairs.append((f"down.{k}.conv", names.downsample.format(level=level), "plain"))
            k += 1
    pairs += [("mid.0", names.mid[0], "res"), ("mid.1", names.mid[1], "attn"), ("mid.2", names.mid[2], "res")]
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            pairs.append((f"up.{k}.block", names.up_res.format(i=i, level=level, j=j), "res"))
            if attention[level]:
                pairs.append((f"up.{k}.attention", names.up_attn.format(i=i, level=level, j=j), "attn"))
            k += 1
        if level != 0:
            pairs.append((f"up.{k}.conv", names.upsample.format(i=i, level=level), "plain"))
            k += 1
    return pairs + [("norm_out", names.norm_out, "plain"), ("conv_out", "conv_out", "plain")]


RES_PARAMS = (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"),
              ("conv2", "conv2"), ("skip", "conv_shortcut"))
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}  # diffusers < 0.14


def modern_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict with the attention names of diffusers before 0.14 (query, key, value, proj_attn)
    renamed as today's (to_q, to_k, to_v, to_out.0), as diffusers itself does on loading."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in LEGACY_ATTENTION:
            key = ".".join([*parts[:-2], LEGACY_ATTENTION[parts[-2]], parts[-1]])
        renamed[key] = value
    return renamed


def ddpmlab_state(theirs: dict[str, torch.Tensor], spec: UNetSpec) -> dict[str, torch.Tensor]:
    """The ddpmlab UNet state dict holding a UNet2DModel's weights (names and layouts mapped; nothing is
    recomputed). Names the model lacks are left out and names it does not know are kept, for state_mismatch."""
    theirs = modern_names(theirs)
    ours, used = {}, set()

    def take(our_name: str, their_name: str, shape=None) -> None:
        if their_name in theirs:
            used.add(their_name)
            value = theirs[their_name]
            ours[our_name] = value.reshape(shape) if shape is not None else value

    for mine, other, kind in module_pairs(spec):
        if kind == "plain":
            for param in ("weight", "bias"):
                take(f"{mine}.{param}", f"{other}.{param}")
        elif kind == "res":
            for a, b in RES_PARAMS:
                for param in ("weight", "bias"):
                    take(f"{mine}.{a}.{param}", f"{other}.{b}.{param}")
        else:
            for param in ("weight", "bias"):
                take(f"{mine}.norm.{param}", f"{other}.group_norm.{param}")
            parts = [f"{other}.{name}" for name in ("to_q", "to_k", "to_v")]
            if all(f"{p}.weight" in theirs and f"{p}.bias" in theirs for p in parts):
                weight = torch.cat([theirs[f"{p}.weight"] for p in parts])
                ours[f"{mine}.qkv.weight"] = weight.reshape(*weight.shape, 1, 1)
                ours[f"{mine}.qkv.bias"] = torch.cat([theirs[f"{p}.bias"] for p in parts])
                used.update(f"{p}.{param}" for p in parts for param in ("weight", "bias"))
            weight = theirs.get(f"{other}.to_out.0.weight")
            take(f"{mine}.proj.weight", f"{other}.to_out.0.weight",
                 (*weight.shape, 1, 1) if weight is not None and weight.dim() == 2 else None)
            take(f"{mine}.proj.bias", f"{other}.to_out.0.bias")
    ours.update({name: value for name, value in theirs.items() if name not in used})  # reported as unknown
    return ours


def diffusers_state(ours: dict[str, torch.Tensor], spec: UNetSpec) -> dict[str, torch.Tensor]:
    """The UNet2DModel state dict of a ddpmlab UNet's weights: the inverse of ddpmlab_state."""
    theirs = {}
    for mine, other, kind in module_pairs(spec):
        if kind == "plain":
            theirs.update({f"{other}.{p}": ours[f"{mine}.{p}"] for p in ("weight", "bias") if f"{mine}.{p}" in ours})
        elif kind == "res":
            theirs.update({f"{other}.{b}.{p}": ours[f"{mine}.{a}.{p}"] for a, b in RES_PARAMS
                           for p in ("weight", "bias") if f"{mine}.{a}.{p}" in ours})
        else:
            theirs.update({f"{other}.group_norm.{p}": ours[f"{mine}.norm.{p}"] for p in ("weight", "bias")})
            q, k, v = ours[f"{mine}.qkv.weight"].flatten(1).chunk(3)
            qb, kb, vb = ours[f"{mine}.qkv.bias"].chunk(3)
            theirs.update({f"{other}.to_q.weight": q, f"{other}.to_k.weight": k, f"{other}.to_v.weight": v,
                           f"{other}.to_q.bias": qb, f"{other}.to_k.bias": kb, f"{other}.to_v.bias": vb,
                           f"{other}.to_out.0.weight": ours[f"{mine}.proj.weight"].flatten(1),
                           f"{other}.to_out.0.bias": ours[f"{mine}.proj.bias"]})
    return {name: value.detach().cpu().contiguous() for name, value in theirs.items()}
