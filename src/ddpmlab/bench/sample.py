"""`ddpmlab bench sample`: sampling speed of a config's (untrained) model; the time does not depend on the weights."""

from __future__ import annotations

import torch

from ddpmlab.bench.timing import check_positive, data_shape
from ddpmlab.config import load_config
from ddpmlab.errors import UserError
from ddpmlab.eval.speed import sampling_speed
from ddpmlab.methods.ddpm import build_schedule, build_unet
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import SAMPLERS, SamplingSettings, resolve_steps
from ddpmlab.train import hotpath


def bench_sample(config_name: str, sampler: str, steps: int | None = None, overrides: list[str] | None = None,
                 batch_size: int | None = None, repeats: int = 3, device: str = "auto") -> dict:
    """Images per second and network evaluations per second of `sampler` with `steps` steps on a freshly built
    model of the config: median of `repeats` timed batches after a 2-step warm-up (`eval.speed.sampling_speed`),
    the network laid out and autocast as training runs it (train.channels_last; train.bf16 on CUDA).
    network_evaluations_per_s counts batched evaluations (each on batch_size images). UserError for bad input."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; samplers: {', '.join(SAMPLERS)}")
    config = load_config(config_name, overrides)
    batch_size = batch_size if batch_size is not None else config.sample.batch_size
    check_positive(batch_size=batch_size, repeats=repeats)
    steps = resolve_steps(sampler, steps, config.diffusion.timesteps)
    device = resolve_device(device)
    torch.manual_seed(config.train.seed)
    channels, size, classes = data_shape(config.data)
    classes = classes if config.model.conditional else None
    layout = hotpath.memory_format(config.train.channels_last, device)
    model = build_unet(config.model, channels, size, classes, config.diffusion.prediction)
    model = model.to(device, memory_format=layout).eval()
    bf16 = device.type == "cuda" and config.train.bf16
    with hotpath.autocast(device, bf16):
        result = sampling_speed(model, build_schedule(config.diffusion), (batch_size, channels, size, size),
                                SamplingSettings(sampler, steps), repeats=repeats, device=device)
    return {"benchmark": "sample", "config": config_name, "overrides": list(overrides or []), **result,
            "channels_last": layout == torch.channels_last, "bf16": bf16,
            "network_evaluations_per_s": result["nfe"] / result["seconds_per_batch"],
            "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}


def describe_sample(result: dict) -> str:
    """The human-readable lines of a bench_sample result."""
    r = result
    return "\n".join([
        f"{r['config']}: {r['sampler']} {r['steps']} steps ({r['nfe']} network evaluations), batch {r['batch_size']} "
        f"on {r['device']}{' (bf16 autocast)' if r['bf16'] else ''}, {r['parameters']:,} parameters, median of "
        f"{r['repeats']} batches; channels_last {'on' if r['channels_last'] else 'off'}",
        f"  {r['images_per_s']:.3f} images/s, {r['network_evaluations_per_s']:.2f} network evaluations/s "
        f"({r['seconds_per_batch']:.2f} s per batch)",
        f"  peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB; load average {r['load_average_1min']:.2f} "
        f"with {r['torch_threads']} torch threads on {r['cpu_count']} cores",
    ])
