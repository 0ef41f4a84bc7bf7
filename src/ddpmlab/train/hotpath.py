"""The speed switches of a training step: what `auto` means on a device and how each switch is applied.

train.data_on_device, train.fused_adam and train.channels_last are `auto` (on for CUDA, off elsewhere), true or
false; train.compile is true or false. None changes the maths (the fused kernels and other memory layouts round
differently); with the defaults on a CPU every number is what it was before the switches existed, bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ddpmlab.config import Switch
from ddpmlab.data import ImageData
from ddpmlab.errors import UserError

DATA_SHARE_OF_FREE_MEMORY = 0.25  # data_on_device=auto keeps a dataset on the GPU only if it takes at most this


def resolve_switch(value: Switch, device: torch.device) -> bool:
    """A switch's setting on `device`: true and false as given, `auto` on for CUDA and off elsewhere."""
    return device.type == "cuda" if value == "auto" else bool(value)


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on CUDA when train.bf16 (the forward passes; a backward runs in the forward's dtypes), else
    nothing: the CPU computes in float32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and bf16 else contextlib.nullcontext()


def memory_format(channels_last: Switch, device: torch.device) -> torch.memory_format:
    """torch.channels_last (NHWC) when train.channels_last resolves on for `device`, else the default NCHW."""
    return torch.channels_last if resolve_switch(channels_last, device) else torch.contiguous_format


def data_device(data: ImageData, device: torch.device, data_on_device: Switch) -> torch.device:
    """Where the uint8 training images and labels are kept: `device` when train.data_on_device is true, or `auto`
    on CUDA with the data taking at most a quarter of the GPU's free memory (CIFAR-10: 150 MiB); else the CPU,
    from which each batch is gathered and copied (waiting on the GPU's queue once per step)."""
    if device.type != "cuda" or data_on_device is False:
        return torch.device("cpu")
    if data_on_device is True:
        return device
    nbytes = data.images.nbytes + (data.labels.nbytes if data.labels is not None else 0)
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= DATA_SHARE_OF_FREE_MEMORY * free else torch.device("cpu")


def describe(data: torch.device, layout: torch.memory_format, fused: bool, compiled: bool) -> str:
    """The switches a run trains with, for run.log: e.g. "images on cuda:0, channels_last, fused AdamW, compiled"."""
    return (f"images on {data}, {'channels_last' if layout == torch.channels_last else 'NCHW'}, "
            f"{'fused AdamW' if fused else 'AdamW'}, {'compiled' if compiled else 'eager'}")


def adamw(params, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """torch.optim.AdamW, with its fused kernel when `fused` (train.fused_adam resolved); UserError when this
    PyTorch has no fused AdamW for the parameters' device."""
    try:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **({"fused": True} if fused else {}))
    except RuntimeError as exc:
        raise UserError(f"train.fused_adam=true is not supported here ({str(exc).splitlines()[0]}); "
                        f"set train.fused_adam=false") from None


def with_kernel_choice(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A saved optimizer state whose parameter groups take `optimizer`'s kernel choice (fused, foreach) instead of
    the saved one, so that a run saved with either resumes with the switches it is resumed with."""
    groups = [{**saved, **{key: current[key] for key in ("fused", "foreach") if key in current}}
              for saved, current in zip(state["param_groups"], optimizer.param_groups)]
    return {**state, "param_groups": groups}


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Lay each parameter's optimizer state (AdamW's moments) out in memory like the parameter itself: a loaded
    state is NCHW-contiguous, while the fused and foreach kernels walk a parameter and its moments in memory order."""
    for parameter, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                state[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def compile_networks(net: nn.Module) -> None:
    """torch.compile each network of a method in place (a DDPM's backbone; a GAN's generator and discriminator):
    nn.Module.compile keeps the modules and their state_dict keys (no `_orig_mod.` prefix in checkpoints)."""
    for child in net.children():
        child.compile()
