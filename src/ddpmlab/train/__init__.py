"""Training: the loop, checkpoints, EMA."""

from ddpmlab.methods.ddpm import build_schedule, build_unet
from ddpmlab.rng import resolve_device
from ddpmlab.train.trainer import Trainer, scheduled_lr, warmup_lr

__all__ = ["Trainer", "scheduled_lr", "warmup_lr", "build_schedule", "build_unet", "resolve_device"]
