"""Training: the loop, checkpoints, EMA."""

from ddpmlab.train.build import build_schedule, build_unet, resolve_device
from ddpmlab.train.trainer import Trainer, warmup_lr

__all__ = ["Trainer", "warmup_lr", "build_schedule", "build_unet", "resolve_device"]
