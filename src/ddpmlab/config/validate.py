"""Checking a Config: the one place where values are checked, naming the bad key."""

from __future__ import annotations

import dataclasses

from ddpmlab.config.sections import (AE_LOSSES, BAD_IMAGE_POLICIES, BASELINE_SECTIONS, DATASETS, EVAL_METRICS,
                                     LOSS_WEIGHTINGS, LR_SCHEDULES, METHODS, PREDICTIONS, RECONSTRUCTIONS,
                                     RESUME_SAFE_KEYS, SCHEDULES, Config, DCGANConfig, LDMConfig, VAEConfig,
                                     VAEGANConfig, flatten)
from ddpmlab.diffusion.schedule import linear_beta_range
from ddpmlab.errors import UserError
from ddpmlab.samplers import SAMPLERS, VARIANCES, parse_guidance_interval


GUIDE_KEYS = ("ldm.guide_channels", "ldm.guide_steps")  # an LDM's guide, which a resume may replace (guide_replaced)


def guide_stage_start(config: Config) -> int | None:
    """The first step of an LDM's guide stage (a smaller guide of its own, ldm.guide_channels); None without one."""
    section = config.ldm
    return config.train.steps - section.guide_steps if config.method == "ldm" and section.guide_channels else None


def guide_replaced(trained: Config, requested: Config, step: int) -> bool:
    """Whether a resume at `step` replaces the LDM's guide by a new smaller guide of its own (GUIDE_KEYS changed,
    to ldm.guide_channels > 0), whose stage is still all ahead: at or after `step`, and no guide stage of the
    `trained` config begun before it. Karras et al.'s guide is trained apart from the model it guides, so a finished
    run can gain one: `--resume RUN ldm.guide_channels=16 ldm.guide_steps=2000 train.steps=<step + 2000>`."""
    old, new = flatten(trained), flatten(requested)
    if all(old[key] == new[key] for key in GUIDE_KEYS) or guide_stage_start(requested) is None:
        return False
    begun = guide_stage_start(trained)
    return step <= guide_stage_start(requested) and (begun is None or step <= begun)


def guide_hint(trained: Config, step: int, changed: list[str]) -> str:
    """What resume_changes' refusal adds when guide keys are among the `changed`: when a new guide may come."""
    if not any(key in GUIDE_KEYS for key in changed):
        return ""
    begun = guide_stage_start(trained)
    if begun is not None and step > begun:
        return f"; the run's own guide stage began at step {begun}, so its guide stays"
    return (f", and a new guide of its own (ldm.guide_channels > 0) whose whole stage lies ahead "
            f"(train.steps - ldm.guide_steps >= {step})")


def resume_changes(trained: Config, requested: Config, step: int, source: str = "") -> None:
    """UserError naming every change `--resume` must refuse from the config the checkpoint was `trained` with: keys
    outside RESUME_SAFE_KEYS (`source`, e.g. " by editing RUN/config.yaml", says where the new values came from) but
    a new guide's (guide_replaced), train.steps below the run's current `step`, or a guide stage that would move
    once it has begun."""
    old, new = flatten(trained), flatten(requested)
    replaced = guide_replaced(trained, requested, step)
    changed = [key for key in old if old[key] != new[key] and key not in RESUME_SAFE_KEYS
               and f"{key.split('.')[0]}.*" not in RESUME_SAFE_KEYS and not (replaced and key in GUIDE_KEYS)]
    if changed:
        first, *rest = (f"{key} ({old[key]!r} -> {new[key]!r})" for key in changed)
        key, values = first.split(" ", 1)
        raise UserError(f"cannot change {key} on --resume {values}" + "".join(f", nor {change}" for change in rest)
                        + f"{source}: {'it defines' if not rest else 'they define'} the model, data or process the "
                        f"checkpoint was trained for; start a new run instead. On resume only "
                        f"{', '.join(RESUME_SAFE_KEYS)} may change"
                        + guide_hint(trained, step, changed))
    if requested.train.steps < step:
        raise UserError(f"train.steps={requested.train.steps} is below the run's step {step}; "
                        f"give train.steps >= {step} to continue it")
    begun, start = guide_stage_start(trained), guide_stage_start(requested)
    if begun is not None and step > begun and start != begun:
        raise UserError(f"the run is in its guide stage (from step {begun}); train.steps="
                        f"{requested.train.steps} would move that stage to step {start}: keep "
                        f"train.steps={trained.train.steps}")
    if start is not None and step > start and start != begun:
        raise UserError(f"train.steps={requested.train.steps} would start the guide stage (its last "
                        f"ldm.guide_steps={requested.ldm.guide_steps}) at step {start}, behind the run's step {step}: "
                        f"give train.steps >= {step + requested.ldm.guide_steps}")


def eval_metric_names(text: str) -> list[str]:
    """train.eval_metrics "fd,fid" -> ["fd", "fid"] in the order given (the first ranks checkpoints); UserError
    naming the key for an unknown or missing name."""
    names = [name.strip().lower() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in EVAL_METRICS]
    _check(bool(names) and not unknown and len(set(names)) == len(names), "train.eval_metrics",
           f"{text!r} must name one or both of {', '.join(EVAL_METRICS)}, comma-separated, each once")
    return names


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"invalid config value {key}: {message}")


def validate(config: Config) -> None:
    """Raise UserError naming the first invalid key; the one place where values are checked."""
    d, m, f, t, s = config.data, config.model, config.diffusion, config.train, config.sample
    _check(config.method in METHODS, "method", f"{config.method!r} is not one of {', '.join(METHODS)}")
    _check_baseline_sections(config)
    _check_ldm(config)
    _check(d.name in DATASETS, "data.name", f"{d.name!r} is not one of {', '.join(DATASETS)}")
    _check(d.image_size is None or 4 <= d.image_size <= 1024, "data.image_size", "must be in 4..1024")
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)")
    _check(d.limit is None or d.limit > 0, "data.limit", "must be positive")
    _check(d.synthetic_count > 0, "data.synthetic_count", "must be positive")
    _check(4 <= d.synthetic_size <= 256, "data.synthetic_size", "must be in 4..256")
    _check(d.synthetic_channels in (1, 3), "data.synthetic_channels", "must be 1 or 3")
    _check(d.on_bad_image in BAD_IMAGE_POLICIES, "data.on_bad_image",
           f"{d.on_bad_image!r} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    if d.name in ("sprites", "folder"):
        _check(d.path is not None, "data.path", f"data.name={d.name} needs data.path")

    _check(m.channels > 0, "model.channels", "must be positive")
    _check(len(m.channel_mult) > 0 and all(c > 0 for c in m.channel_mult), "model.channel_mult", "must be positive integers")
    _check(m.num_res_blocks > 0, "model.num_res_blocks", "must be positive")
    _check(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    _check(m.groups > 0 and m.channels % m.groups == 0, "model.groups", f"must divide model.channels={m.channels}")
    _check(0.0 <= m.class_dropout < 1.0, "model.class_dropout", "must be in [0, 1)")

    _check(1 <= f.timesteps <= 4000, "diffusion.timesteps", f"{f.timesteps} is not in 1..4000")
    _check(f.schedule in SCHEDULES, "diffusion.schedule", f"{f.schedule!r} is not one of {', '.join(SCHEDULES)}")

    if f.schedule == "linear" and 1 <= f.timesteps <= 4000:
        default_start, default_end = linear_beta_range(f.timesteps)
        start = default_start if f.beta_start is None else f.beta_start
        end = default_end if f.beta_end is None else f.beta_end
        _check(0 < start <= end < 1, "diffusion.beta_start",
               f"need 0 < beta_start <= beta_end < 1 (got {start:g} and {end:g} at T={f.timesteps})")
    _check(f.cosine_s >= 0, "diffusion.cosine_s", "must be >= 0")
    if f.schedule == "custom":
        _check(f.betas is not None and len(f.betas) == f.timesteps, "diffusion.betas",
               "schedule=custom needs a list of diffusion.timesteps betas")
    _check(f.prediction in PREDICTIONS, "diffusion.prediction", f"{f.prediction!r} is not one of {', '.join(PREDICTIONS)}")
    _check(f.loss_weighting in LOSS_WEIGHTINGS, "diffusion.loss_weighting",
           f"{f.loss_weighting!r} is not one of {', '.join(LOSS_WEIGHTINGS)}")
    _check(f.min_snr_gamma > 0, "diffusion.min_snr_gamma", "must be positive")

    _check(t.steps > 0, "train.steps", "must be positive")
    _check(t.batch_size > 0, "train.batch_size", "must be positive")
    _check(t.lr > 0, "train.lr", "must be positive")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(0.0 < t.adam_beta2 < 1.0, "train.adam_beta2", "must be in (0, 1)")
    _check(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _check(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
           f"{t.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    _check(0.0 <= t.lr_end_factor <= 1.0, "train.lr_end_factor", "must be in [0, 1]")
    _check(t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)")
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
    _check(t.ema_warmup >= 1.0, "train.ema_warmup", "must be >= 1 (1: no warm-up, the decay is ema_decay throughout)")
    _check(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), "train.device",
           "must be auto, cpu, cuda or cuda:N")
    for key in ("log_every", "val_every", "val_batches", "sample_every", "sample_n", "checkpoint_every", "keep_checkpoints",
                "max_bad_steps"):
        _check(getattr(t, key) > 0, f"train.{key}", "must be positive")


    _check(t.eval_every >= 0, "train.eval_every", "must be >= 0 (0: no evaluation during training)")
    _check(t.eval_n >= 2, "train.eval_n", "must be at least 2 (a covariance needs two images)")
    eval_metric_names(t.eval_metrics)
    _check(t.eval_sampler in SAMPLERS, "train.eval_sampler", f"{t.eval_sampler!r} is not one of {', '.join(SAMPLERS)}")
    _check(t.eval_steps > 0, "train.eval_steps", "must be positive")
    _check(not (t.keep_best and config.method == "ldm" and config.ldm.guide_channels), "train.keep_best",
           "picks a checkpoint by the denoiser's unguided scores, which the guide stage (ldm.guide_channels) does "
           "not change: the best checkpoint would hold no trained guide; set train.keep_best=false or "
           "ldm.guide_channels=0")
    _check(not t.keep_best or t.eval_every > 0, "train.keep_best",
           "ranks checkpoints by their score during training: set train.eval_every > 0 too")
    _check(s.sampler in SAMPLERS, "sample.sampler", f"{s.sampler!r} is not one of {', '.join(SAMPLERS)}")
    _check(s.steps > 0, "sample.steps", "must be positive")
    _check(0.0 <= s.eta <= 1.0, "sample.eta", "must be in [0, 1]")
    _check(s.n > 0, "sample.n", "must be positive")
    _check(s.batch_size > 0, "sample.batch_size", "must be positive")
    _check(s.variance in VARIANCES, "sample.variance", f"{s.variance!r} is not one of {', '.join(VARIANCES)}")
    if s.guidance_interval is not None:
        try:
            parse_guidance_interval(s.guidance_interval)
        except UserError:
            _check(False, "sample.guidance_interval", "must be [σ_lo, σ_hi] with 0 <= σ_lo < σ_hi (null: guidance "
                                                      "at every step)")


def _check_baseline_sections(config: Config) -> None:
    """A baseline section's keys apply to its own method only; a baseline is unconditional; values in range."""
    for name in BASELINE_SECTIONS:
        section, defaults = getattr(config, name), type(getattr(config, name))()
        if name != config.method:
            for key in (f.name for f in dataclasses.fields(section)):
                if getattr(section, key) != getattr(defaults, key):
                    raise UserError(f"{name}.{key} applies to method={name}, but this config has method={config.method}; "
                                    f"set method={name} or drop {name}.{key}")
        check_baseline_section(name, section)
    _check(not (config.model.conditional and config.method in BASELINE_SECTIONS), "model.conditional",
           f"method={config.method} is unconditional; class conditioning (model.conditional=true) applies to "
           f"method=ddpm and method=ldm")


def check_baseline_section(name: str, section: VAEConfig | DCGANConfig | VAEGANConfig) -> None:
    """UserError naming the first out-of-range key of baseline section `name` (vae, dcgan or vaegan): the one
    place their values are checked, for a config and for a network rebuilt from a checkpoint's spec alike."""
    for key in ("latent_dim", "base_channels"):
        _check(getattr(section, key) > 0, f"{name}.{key}", "must be positive")
    _check(section.lr > 0, f"{name}.lr", "must be positive")
    _check(0.0 <= section.beta1 < 1.0, f"{name}.beta1", "must be in [0, 1)")
    if hasattr(section, "kl_weight"):
        _check(section.kl_weight >= 0, f"{name}.kl_weight", "must be >= 0")
    if hasattr(section, "adversarial_weight"):
        _check(section.adversarial_weight >= 0, f"{name}.adversarial_weight", "must be >= 0")
    if hasattr(section, "decoder_std"):
        _check(section.decoder_std > 0, f"{name}.decoder_std", "must be positive")
    if hasattr(section, "reconstruction"):
        _check(section.reconstruction in RECONSTRUCTIONS, f"{name}.reconstruction",
               f"{section.reconstruction!r} is not one of {', '.join(RECONSTRUCTIONS)}")


def _check_ldm(config: Config) -> None:
    """The ldm section applies to method=ldm only; its values in range, its autoencoder stage inside train.steps."""
    section, defaults = config.ldm, LDMConfig()
    if config.method != "ldm":
        for key in (f.name for f in dataclasses.fields(section)):
            if getattr(section, key) != getattr(defaults, key):
                raise UserError(f"ldm.{key} applies to method=ldm, but this config has method={config.method}; "
                                f"set method=ldm or drop ldm.{key}")
        return
    check_ldm_section(section)
    _check(0 < section.autoencoder_steps < config.train.steps, "ldm.autoencoder_steps",
           f"{section.autoencoder_steps} must be in 1..train.steps-1 ({config.train.steps - 1}): the steps after it "
           f"train the latent DDPM")
    _check(section.ae_lr > 0, "ldm.ae_lr", "must be positive")
    _check(section.ae_batch_size is None or section.ae_batch_size > 0, "ldm.ae_batch_size", "must be positive")
    _check(0 <= section.adversarial_start < section.autoencoder_steps, "ldm.adversarial_start",
           f"{section.adversarial_start} must be in 0..ldm.autoencoder_steps-1 ({section.autoencoder_steps - 1})")
    diffusion_steps = config.train.steps - section.autoencoder_steps
    if section.guide_channels:
        _check(0 < section.guide_steps < diffusion_steps, "ldm.guide_steps",
               f"{section.guide_steps} must be in 1..{diffusion_steps - 1} with ldm.guide_channels: the steps of the "
               f"guide's stage, which follows the diffusion stage within train.steps - ldm.autoencoder_steps "
               f"({diffusion_steps})")
    _check(section.guide_steps < diffusion_steps, "ldm.guide_steps",
           f"{section.guide_steps} must be below the {diffusion_steps} diffusion steps (train.steps - "
           f"ldm.autoencoder_steps): the guide is the denoiser part-way through its stage; or ldm.guide_steps=0")
    _check(not ((section.guide_steps or section.guide_channels) and config.model.conditional), "ldm.guide_steps",
           "autoguidance applies to an unconditional denoiser; a class-conditional one (model.conditional=true) is "
           "guided by classifier-free guidance: set ldm.guide_steps=0 and ldm.guide_channels=0")


def check_ldm_section(section: LDMConfig) -> None:
    """UserError naming the first out-of-range network key of an ldm section: for a config and for a network rebuilt
    from a checkpoint's spec alike."""
    factor = section.factor
    _check(factor in (1, 2, 4, 8, 16), "ldm.factor", f"{factor} must be a power of two: 1, 2, 4, 8 or 16")
    _check(section.latent_channels > 0, "ldm.latent_channels", "must be positive")
    _check(section.ae_channels > 0, "ldm.ae_channels", "must be positive")
    _check(section.ae_groups > 0, "ldm.ae_groups", "must be positive")
    _check(section.reconstruction in AE_LOSSES, "ldm.reconstruction",
           f"{section.reconstruction!r} is not one of {', '.join(AE_LOSSES)}")
    _check(section.kl_weight >= 0, "ldm.kl_weight", "must be >= 0 (0: a plain autoencoder)")
    _check(section.adversarial_weight >= 0, "ldm.adversarial_weight", "must be >= 0 (0: no discriminator)")
    _check(section.disc_channels > 0, "ldm.disc_channels", "must be positive")
    _check(section.guide_steps >= 0, "ldm.guide_steps", "must be >= 0 (0: no autoguidance guide)")
    _check(section.guide_channels >= 0, "ldm.guide_channels",
           "must be >= 0 (0: the guide is the denoiser after ldm.guide_steps diffusion steps)")
