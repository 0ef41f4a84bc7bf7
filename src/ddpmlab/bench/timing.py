"""What every benchmark shares: a timed loop and its median, FLOP counts, the device's matmul rate, input shapes."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.data.synthetic import SHAPES
from ddpmlab.errors import UserError
from ddpmlab.eval.speed import synchronize

# data.name -> (channels, native image size, classes) of the sources whose shape is known without reading them
KNOWN_SHAPES = {"cifar10": (3, 32, 10), "fashion-mnist": (1, 28, 10), "mnist": (1, 28, 10), "sprites": (3, 16, None)}


def timed_calls(step: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of `repeats` calls of `step`, after `warmup` untimed ones; GPU work is waited for
    before each clock read, so a time covers the call's work and not just its queueing."""
    for _ in range(warmup):
        step()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def images_per_second(batch_size: int, seconds: list[float]) -> float:
    """batch_size / the median of `seconds`: the throughput of a typical call, robust to a stray slow one."""
    return batch_size / statistics.median(seconds)


def cpu_attention_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU's fused attention kernel: QKᵀ and (softmax)V, 2·N²·d multiply-adds each per head."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                 **kwargs) -> int:
    """FLOPs of the CPU fused attention kernel's backward pass, counted as for the GPU kernels."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# Kernels some torch versions' counter has no formula for (2.14 counts the CPU's fused attention as 0 FLOPs);
# given for every version, so the count does not depend on which one is installed.
EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_forward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward_flops,
}


def count_flops(work: Callable[[], object]) -> int:
    """Floating-point operations of the matmuls, convolutions and attention that `work()` runs (one multiply-add
    is 2), as torch.utils.flop_counter counts them (with EXTRA_FLOP_FORMULAS); elementwise work (norms,
    activations, the optimizer) is not counted."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with counter:
        work()
    return int(counter.get_total_flops())


def matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype the device's peak is quoted in for training: bfloat16 on CUDA (autocast), float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_rate(device: torch.device, size: int | None = None, repeats: int = 5) -> dict:
    """The measured rate of one large square `torch.mm` (2·size³ FLOPs) on `device`, in matmul_dtype(device):
    {"matmul_tflops": median TFLOP/s of `repeats` timed products after one untimed, "matmul_size", "matmul_dtype"}.
    A practical ceiling for this process, not the vendor's peak."""
    size = size or (8192 if device.type == "cuda" else 2048)
    dtype = matmul_dtype(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = timed_calls(lambda: torch.mm(a, b), repeats, warmup=1, device=device)
    return {"matmul_tflops": 2 * size**3 / statistics.median(seconds) / 1e12, "matmul_size": size,
            "matmul_dtype": str(dtype).removeprefix("torch.")}


def data_shape(cfg: DataConfig) -> tuple[int, int, int | None]:
    """(channels, image size, number of classes or None) of a dataset, read from its config without loading it
    where that is known: cifar10 3×32, (fashion-)mnist 1×28, sprites 3×16, synthetic from its keys; otherwise (a
    folder, sprites' classes) the local files are read. data.image_size replaces the native size."""
    if cfg.name == "synthetic":
        channels, size, classes = cfg.synthetic_channels, cfg.synthetic_size, len(SHAPES)
    elif cfg.name in KNOWN_SHAPES and (cfg.name != "sprites" or not cfg.labels_path):
        channels, size, classes = KNOWN_SHAPES[cfg.name]
    else:
        data = load_dataset(cfg, "train")
        channels, size, classes = data.channels, data.image_size, data.num_classes or None
    return channels, cfg.image_size or size, classes


def check_positive(**values: int) -> None:
    """UserError naming the first option that is not a positive integer, e.g. check_positive(batch_size=0)."""
    for name, value in values.items():
        if value is None or value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
