"""`ddpmlab bench sample`: sampling speed of a config's (untrained) method; the time does not depend on the weights."""

from __future__ import annotations

import torch

from ddpmlab.bench.timing import check_positive, data_shape
from ddpmlab.config import load_config
from ddpmlab.errors import UserError
from ddpmlab.eval.speed import sampling_speed
from ddpmlab.methods import build_method, samples_in_one_pass, trained_parameters
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import SAMPLERS, SamplingSettings, resolve_steps
from ddpmlab.train import hotpath


def bench_sample(config_name: str, sampler: str | None = None, steps: int | None = None,
                 overrides: list[str] | None = None, batch_size: int | None = None, repeats: int = 3,
                 device: str = "auto") -> dict:
    """Images per second and network evaluations per second of drawing a batch from a freshly built network of the
    config's method: a diffusion model by `sampler` with `steps` steps, a baseline (VAE, GAN) in its one pass, which
    takes no sampler; median of `repeats` timed batches after a warm-up (`eval.speed.sampling_speed`), the network
    laid out and autocast as training runs it (train.channels_last; train.bf16 on CUDA).
    network_evaluations_per_s counts batched evaluations (each on batch_size images). UserError for bad input."""
    config = load_config(config_name, overrides)
    one_pass = samples_in_one_pass(config.method)
    check_sampler(config.method, one_pass, sampler, steps)
    batch_size = batch_size if batch_size is not None else config.sample.batch_size
    check_positive(batch_size=batch_size, repeats=repeats)
    steps = None if one_pass else resolve_steps(sampler, steps, config.diffusion.timesteps)
    device = resolve_device(device)
    torch.manual_seed(config.train.seed)
    channels, size, classes = data_shape(config.data)
    layout = hotpath.memory_format(config.train.channels_last, device)
    model = build_method(config, channels, size, classes if config.model.conditional else None)
    model = model.to(device, memory_format=layout).eval()
    bf16 = device.type == "cuda" and config.train.bf16
    with hotpath.autocast(device, bf16):
        result = sampling_speed(model, None if one_pass else model.schedule, (batch_size, channels, size, size),
                                None if one_pass else SamplingSettings(sampler, steps), repeats=repeats, device=device)
    return {"benchmark": "sample", "config": config_name, "method": config.method, "overrides": list(overrides or []),
            **result, "channels_last": layout == torch.channels_last, "bf16": bf16,
            "network_evaluations_per_s": result["nfe"] / result["seconds_per_batch"],
            "parameters": trained_parameters(model), "torch": torch.__version__}


def check_sampler(method: str, one_pass: bool, sampler: str | None, steps: int | None) -> None:
    """UserError unless a diffusion method is given a known sampler, and a single-pass one neither sampler nor steps."""
    if one_pass and (sampler is not None or steps is not None):
        raise UserError(f"{method} samples in one pass; {'--sampler' if sampler is not None else '--steps'} applies "
                        f"to diffusion models")
    if not one_pass and sampler is None:
        raise UserError(f"a {method} model needs --sampler: {', '.join(SAMPLERS)}")
    if not one_pass and sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; samplers: {', '.join(SAMPLERS)}")


def describe_sample(result: dict) -> str:
    """The human-readable lines of a bench_sample result."""
    r = result
    return "\n".join([
        f"{r['config']}: {sampling_text(r)}, batch {r['batch_size']} "
        f"on {r['device']}{' (bf16 autocast)' if r['bf16'] else ''}, {r['parameters']:,} parameters, median of "
        f"{r['repeats']} batches; channels_last {'on' if r['channels_last'] else 'off'}",
        f"  {r['images_per_s']:.3f} images/s, {r['network_evaluations_per_s']:.2f} network evaluations/s "
        f"({r['seconds_per_batch']:.2f} s per batch)",
        f"  peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB; load average {r['load_average_1min']:.2f} "
        f"with {r['torch_threads']} torch threads on {r['cpu_count']} cores",
    ])


def sampling_text(result: dict) -> str:
    """How a bench_sample result drew its images, e.g. "ddim 10 steps (10 network evaluations)", "dcgan, one pass"."""
    if result["steps"] is None:
        return f"{result['sampler']}, one pass"
    return f"{result['sampler']} {result['steps']} steps ({result['nfe']} network evaluations)"
