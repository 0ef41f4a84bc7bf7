"""`ddpmlab bench peers`: our CIFAR-10 U-Net against diffusers' UNet2DModel in the google/ddpm-cifar10-32
configuration, the same training and sampling step on both, paired and interleaved in one process.

diffusers is an optional extra (`pip install -e .[peers]`), imported only here and only when asked for.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from ddpmlab.bench.timing import check_positive, images_per_second, timed_calls
from ddpmlab.bench.train import TrainingStep, random_batch, switch_text
from ddpmlab.config import load_config
from ddpmlab.errors import UserError
from ddpmlab.eval.speed import machine_load, peak_memory
from ddpmlab.methods import build_method
from ddpmlab.methods.ddpm import build_schedule, build_unet
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import sample

PRESET = "cifar10"
# google/ddpm-cifar10-32's config.json (diffusers' port of Ho et al.'s CIFAR-10 model), with Ho et al.'s dropout
DIFFUSERS_CIFAR10 = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2, "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), "dropout": 0.1,
    "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
    "norm_eps": 1e-6, "norm_num_groups": 32, "act_fn": "silu", "time_embedding_type": "positional",
}


def diffusers_unet2d():
    """diffusers' UNet2DModel class; UserError with the install hint when diffusers is not installed."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise UserError("`ddpmlab bench peers` needs diffusers, an optional extra: pip install -e .[peers]") from None
    return UNet2DModel


class DiffusersEps(nn.Module):
    """diffusers' UNet2DModel behind our `model(x_t, t, labels=None)` -> ε signature, so that the same loss,
    optimiser, EMA and sampler code runs on it."""

    prediction = "eps"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t).sample


def cifar10_networks(overrides: list[str] | None = None):
    """(our `cifar10` preset's UNet, diffusers' UNet2DModel in the google/ddpm-cifar10-32 configuration wrapped as
    DiffusersEps, the preset's Config with `train.*` overrides), both freshly initialised on the CPU. The
    architecture is fixed: any other override is a UserError."""
    other = [item for item in overrides or [] if not item.startswith("train.")]
    if other:
        raise UserError(f"bench peers takes train.* overrides only (they apply to both networks), got {other[0]!r}; "
                        f"the architecture is google/ddpm-cifar10-32's")
    config = load_config(PRESET, overrides)
    ours = build_unet(config.model, 3, 32, None, config.diffusion.prediction)
    theirs = DiffusersEps(diffusers_unet2d()(**DIFFUSERS_CIFAR10))
    return ours, theirs, config


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _paired(steps: dict, batch_size: int, rounds: int, steps_per_round: int, device) -> dict:
    """Time the callables of `steps` ({"ours": f, "theirs": g}) round by round, ours then theirs in each round.

    Returns each side's median images/s over all timed calls, the per-round images/s, the per-round ratios
    ours/theirs and their median (pairing cancels slow drifts of the machine, which hit both sides of a round)."""
    per_round = {side: [] for side in steps}
    seconds = {side: [] for side in steps}
    for _ in range(rounds):
        for side, step in steps.items():
            timed = timed_calls(step, steps_per_round, 0, device)
            seconds[side] += timed
            per_round[side].append(images_per_second(batch_size, timed))
    ratios = [ours / theirs for ours, theirs in zip(per_round["ours"], per_round["theirs"])]
    return {"ours_images_per_s": images_per_second(batch_size, seconds["ours"]),
            "theirs_images_per_s": images_per_second(batch_size, seconds["theirs"]),
            "ours_per_round": per_round["ours"], "theirs_per_round": per_round["theirs"],
            "ratios": ratios, "ratio": statistics.median(ratios)}


def bench_peers(batch_size: int = 8, steps: int = 1, rounds: int = 5, warmup: int = 1, device: str = "auto",
                overrides: list[str] | None = None) -> dict:
    """Training and sampling speed of ours (`cifar10` preset) against diffusers' UNet2DModel (google/ddpm-cifar10-32
    configuration) on the same random batch: a training step is `TrainingStep` (MSE on ε, AdamW, clipping, EMA, bf16
    autocast on CUDA) and a sampling step one DDIM step of `samplers.sample` (one network evaluation in eval mode).
    `rounds` rounds, each timing `steps` calls of ours then of theirs after `warmup` untimed calls of each; `overrides`
    (train.* only, e.g. train.channels_last=true) set the speed switches of both sides alike;
    `images_per_s` is ours' median training throughput, `ratio` the median of the per-round ratios ours/theirs.
    UserError when diffusers is missing (with the install hint) or for bad input."""
    check_positive(batch_size=batch_size, steps=steps, rounds=rounds)
    if warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {warmup}")
    device = resolve_device(device)
    diffusers_unet2d()  # the install hint before any work
    import diffusers

    torch.manual_seed(0)
    ours, theirs, config = cifar10_networks(overrides)
    schedule = build_schedule(config.diffusion)
    x0, _, _ = random_batch(config, batch_size, device)
    training = {side: TrainingStep(build_method(config, 3, 32, backbone=model), config, x0)
                for side, model in (("ours", ours), ("theirs", theirs))}
    shape = tuple(x0.shape)

    def sampling_step(model):
        generator = torch.Generator().manual_seed(0)
        return lambda: sample(model, schedule, shape, sampler="ddim", steps=1, generator=generator, device=device)

    sampling = {side: sampling_step(step.ema.shadow) for side, step in training.items()}
    for step in (*training.values(), *sampling.values()):
        timed_calls(step, 0, warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = _paired(training, batch_size, rounds, steps, device)
    load = machine_load()
    sampling_result = _paired(sampling, batch_size, rounds, steps, device)
    return {"benchmark": "peers", "peer": f"diffusers {diffusers.__version__} UNet2DModel (google/ddpm-cifar10-32)",
            "images_per_s": train["ours_images_per_s"], "train": train, "sample": sampling_result,
            "ours_parameters": parameter_count(ours), "theirs_parameters": parameter_count(theirs),
            "batch_size": batch_size, "steps": steps, "rounds": rounds, "warmup": warmup, "device": str(device),
            "bf16": training["ours"].bf16, **training["ours"].switches, "overrides": list(overrides or []),
            **peak_memory(device), **load, "torch": torch.__version__}


def describe_peers(result: dict) -> str:
    """The human-readable lines of a bench_peers result."""
    r, lines = result, []
    lines.append(f"ours: ddpmlab UNet, `{PRESET}` preset, {r['ours_parameters']:,} parameters; theirs: {r['peer']}, "
                 f"{r['theirs_parameters']:,} parameters")
    lines.append(f"batch {r['batch_size']} on {r['device']}{' (bf16 autocast)' if r['bf16'] else ''}, {r['rounds']} "
                 f"rounds of {r['steps']} step(s) per side, ours then theirs, after {r['warmup']} warm-up step(s); "
                 f"{switch_text(r)}")
    for name, what in (("train", "training step (loss, backward, clip, AdamW, EMA)"),
                       ("sample", "sampling step (one DDIM step, one network evaluation)")):
        part = r[name]
        lines.append(f"  {what}: ours {part['ours_images_per_s']:.2f} images/s, theirs {part['theirs_images_per_s']:.2f} "
                     f"images/s, ours/theirs {part['ratio']:.3f} (median of per-round ratios "
                     f"{', '.join(f'{x:.3f}' for x in part['ratios'])})")
    lines.append(f"  peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB; load average {r['load_average_1min']:.2f} "
                 f"with {r['torch_threads']} torch threads on {r['cpu_count']} cores")
    return "\n".join(lines)
