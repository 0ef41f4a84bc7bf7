"""`ddpmlab bench train`: the speed of full training steps of a config's method on random data of its shape."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ddpmlab.bench.timing import check_positive, count_flops, data_shape, images_per_second, matmul_rate, timed_calls
from ddpmlab.config import Config, load_config
from ddpmlab.errors import UserError
from ddpmlab.eval.speed import machine_load, peak_memory
from ddpmlab.images import model_to_uint8
from ddpmlab.methods import (Stage, build_method, enter_stage, optimizer_settings, stage_data, trained_parameters,
                             training_stages)
from ddpmlab.methods.base import Phase
from ddpmlab.rng import resolve_device, seeded_generator
from ddpmlab.train import hotpath
from ddpmlab.train.ema import EMA


class TrainingStep:
    """One training iteration as the Trainer runs it, on a fixed random batch, for any method's network
    (ddpmlab.methods.MethodNet: a DDPM around any backbone, a VAE, a GAN): for each of the method's phases, its
    loss (forward under bf16 autocast on CUDA when train.bf16), backward, gradient clipping and its AdamW step
    (the method's learning rate and betas), then EMA, with the config's speed switches (train.fused_adam,
    channels_last, compile; the batch is on the device already). Calling it runs one iteration of `stage` (default:
    the first; an LDM's "autoencoder", "diffusion" or "guide" stage; an autoencoder stage with a discriminator is
    timed from ldm.adversarial_start, with both its phases). The network is moved to x0's device and, with
    channels_last, to that layout, in place. A stage that trains on encoded data (an LDM's diffusion and guide stages)
    gets x0's latents, encoded once as the Trainer encodes its images (methods.stage_data)."""

    def __init__(self, net: nn.Module, config: Config, x0: torch.Tensor, labels: torch.Tensor | None = None,
                 stage: Stage | None = None):
        t, device = config.train, x0.device
        step = stage.first if stage is not None else 0
        if config.method == "ldm" and step == 0 and config.ldm.adversarial_weight > 0:
            step = config.ldm.adversarial_start  # the autoencoder's steps with the discriminator's phase
        self.stage = enter_stage(net, config, step)
        self.switches = {"fused_adam": hotpath.resolve_switch(t.fused_adam, device),
                         "channels_last": hotpath.resolve_switch(t.channels_last, device), "compile": t.compile}
        layout = hotpath.memory_format(t.channels_last, device)
        self.model = net.to(device, memory_format=layout).train()
        encoded = stage_data(self.model, self.stage, model_to_uint8(x0), False)  # an LDM's latents, as the Trainer's
        self.x0, self.labels = (x0 if encoded is None else encoded[:, 0]).contiguous(memory_format=layout), labels
        self.grad_clip = t.grad_clip or float("inf")
        self.bf16 = device.type == "cuda" and t.bf16
        lr, betas = self.stage.lr, optimizer_settings(config)[1]
        self.groups = self.model.parameter_groups()
        self.optimizers = {group: hotpath.adamw(params, lr, betas, t.weight_decay, self.switches["fused_adam"])
                           for group, params in self.groups.items()}
        self.ema = EMA(self.model, t.ema_decay, t.ema_warmup)
        if t.compile:
            hotpath.compile_networks(self.model)  # after EMA's copy, as the Trainer does
        self.generator = seeded_generator(device, t.seed)  # latents, t and ε, as the Trainer draws them
        self.steps = 0

    def phases(self) -> Iterator[Phase]:
        """The method's phases on the batch, each one's forward pass under autocast (its backward not)."""
        phases = self.model.training_phases(self.x0, self.generator, self.labels)
        while True:
            with hotpath.autocast(self.x0.device, self.bf16):
                phase = next(phases, None)
            if phase is None:
                return
            yield phase

    def __call__(self) -> None:
        for phase in self.phases():
            optimizer = self.optimizers[phase.group]
            optimizer.zero_grad(set_to_none=True)
            phase.loss.backward()
            nn.utils.clip_grad_norm_(self.groups[phase.group], self.grad_clip)
            optimizer.step()
        self.ema.update(self.model, self.steps)
        self.steps += 1

    def flops(self) -> tuple[int, int]:
        """(forward, forward + backward) FLOPs of one iteration on the batch, all phases, counted on one pass each;
        the weights are not updated."""
        def forward() -> None:
            for _ in self.phases():
                pass

        def forward_backward() -> None:
            for phase in self.phases():
                phase.loss.backward()

        # a compiled network runs its kernels past the counter: count on the eager one
        with torch.compiler.set_stance("force_eager") if self.switches["compile"] else contextlib.nullcontext():
            counts = count_flops(forward), count_flops(forward_backward)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        return counts


def random_batch(config: Config, batch_size: int, device: torch.device, seed: int = 0):
    """(x0 uniform in [−1, 1] shaped like the config's images, labels or None, num_classes or None) on `device`;
    labels are drawn over the classes and the null label, as classifier-free training sees them."""
    channels, size, classes = data_shape(config.data)
    generator = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(batch_size, channels, size, size, generator=generator) * 2 - 1).to(device)
    conditional = config.model.conditional and classes
    if config.model.conditional and not classes:
        raise UserError(f"model.conditional=true but dataset {config.data.name!r} has no class labels")
    labels = torch.randint(0, classes + 1, (batch_size,), generator=generator).to(device) if conditional else None
    return x0, labels, classes if conditional else None


def bench_train(config_name: str, overrides: list[str] | None = None, batch_size: int | None = None, steps: int = 5,
                warmup: int = 1, device: str = "auto") -> dict:
    """Training speed of the config's method (a DDPM's U-Net, a VAE, a GAN's two networks), a step being one
    TrainingStep through the method's own loss and phases: images_per_s (batch / median step time of `steps` timed
    steps after `warmup` untimed ones), seconds per step, peak memory, FLOPs per image (forward; forward + backward)
    and the achieved share of the device's measured matmul rate. A staged method (an LDM) is timed in each stage, at
    that stage's batch unless `batch_size` is given: `stages` lists them, the headline figures are the diffusion
    stage's. UserError for a bad config, size, count or device."""
    config = load_config(config_name, overrides)
    check_positive(batch_size=batch_size if batch_size is not None else 1, steps=steps)
    if warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {warmup}")
    device = resolve_device(device)
    torch.manual_seed(config.train.seed)
    stages = training_stages(config)
    sizes = {stage.name: batch_size or stage.batch_size for stage in stages}
    x0, labels, classes = random_batch(config, max(sizes.values()), device)
    model = build_method(config, x0.shape[1], x0.shape[-1], classes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = [time_stage(model, config, x0[:sizes[stage.name]], labels, stage, steps, warmup) for stage in stages]
    load = machine_load()  # right after timing, before the matmul run adds its own
    rate = matmul_rate(device)
    # a staged method's (an LDM's) headline figures are its diffusion stage's (not a smaller guide's after it)
    result, step = next((timing for timing, stage in zip(timed, stages) if stage.name == "diffusion"), timed[-1])
    for stage_result, _ in timed:
        stage_result["matmul_fraction"] = stage_result["achieved_tflops"] / rate["matmul_tflops"]
    return {"benchmark": "train", "config": config_name, "method": config.method, "overrides": list(overrides or []),
            **result, "steps": steps, "warmup": warmup, "device": str(device),
            "image_shape": list(x0.shape[1:]), "parameters": trained_parameters(model),
            "bf16": step.bf16, **step.switches, **rate, **peak_memory(device), **load, "torch": torch.__version__,
            "stages": [stage_result for stage_result, _ in timed] if len(timed) > 1 else None}


def time_stage(model: nn.Module, config: Config, x0: torch.Tensor, labels: torch.Tensor | None, stage: Stage,
               steps: int, warmup: int) -> tuple[dict, TrainingStep]:
    """({stage, images_per_s, seconds_per_step, seconds, batch_size, FLOPs per image, achieved_tflops}, the
    TrainingStep) of `steps` timed training steps of `stage` on x0 after `warmup` untimed ones."""
    x0 = x0.contiguous()
    labels = labels[:len(x0)] if labels is not None else None
    step = TrainingStep(model, config, x0, labels, stage)
    timed_calls(step, 0, warmup, x0.device)
    seconds = timed_calls(step, steps, 0, x0.device)
    forward_flops, train_flops = step.flops()
    batch_size = len(x0)
    images_per_s = images_per_second(batch_size, seconds)
    return {"stage": stage.name, "images_per_s": images_per_s, "seconds_per_step": batch_size / images_per_s,
            "seconds": seconds, "batch_size": batch_size, "forward_flops_per_image": forward_flops / batch_size,
            "train_flops_per_image": train_flops / batch_size,
            "achieved_tflops": train_flops / batch_size * images_per_s / 1e12}, step


def switch_text(result: dict) -> str:
    """The speed switches a result ran with, e.g. "fused_adam off, channels_last on, compile off"."""
    return ", ".join(f"{name} {'on' if result.get(name) else 'off'}" for name in ("fused_adam", "channels_last", "compile"))


def describe_train(result: dict) -> str:
    """The human-readable lines of a bench_train result."""
    r = result
    return "\n".join([
        f"{r['config']}: {r['method']}, {r['parameters']:,} parameters, batch {r['batch_size']} of {'×'.join(map(str, r['image_shape']))}"
        f" on {r['device']}{' (bf16 autocast)' if r['bf16'] else ''}, {r['steps']} timed steps after {r['warmup']} warm-up",
        f"  switches: {switch_text(r)}",
        f"  {r['images_per_s']:.2f} images/s (median), {r['seconds_per_step']:.3f} s per step; "
        f"steps {', '.join(f'{s:.3f}' for s in r['seconds'])} s",
        f"  FLOPs per image: forward {r['forward_flops_per_image'] / 1e9:.2f} G, forward+backward "
        f"{r['train_flops_per_image'] / 1e9:.2f} G; achieved {r['achieved_tflops']:.3f} TFLOP/s",
        f"  {r['matmul_dtype']} matmul ({r['matmul_size']}²) here: {r['matmul_tflops']:.3f} TFLOP/s, so the training step "
        f"reaches {100 * r['matmul_fraction']:.1f}% of it",
        *(f"  stage {s['stage']}: {s['images_per_s']:.2f} images/s at batch {s['batch_size']}, "
          f"{s['seconds_per_step']:.3f} s per step, {s['train_flops_per_image'] / 1e9:.3f} GFLOP per image"
          for s in r.get("stages") or []),
        f"  peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB ({r['peak_memory_kind']})",
        f"  load average {r['load_average_1min']:.2f} with {r['torch_threads']} torch threads on {r['cpu_count']} cores",
    ])
