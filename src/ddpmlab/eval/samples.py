"""Samples of a model: drawn in seeded batches (shared among processes), saved with their settings, read back."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpmlab.distributed import Processes, gather_to_main
from ddpmlab.errors import UserError
from ddpmlab.images import model_to_uint8
from ddpmlab.methods import sample_images
from ddpmlab.samplers import SamplingSettings


# -- samples ----------------------------------------------------------------------------------------
def class_labels(n: int, num_classes: int | None) -> torch.Tensor | None:
    """Balanced labels 0, 1, ..., num_classes − 1, 0, ... for a conditional model; None otherwise."""
    return torch.arange(n) % num_classes if num_classes else None


# what a guidance flag needs, for "guidance w (--guidance)" and "--guidance-interval"
GUIDANCE_NEEDS = ("{what} needs a class-conditional model (model.conditional=true) or a latent DDPM with an "
                  "autoguidance guide (ldm.guide_steps, ldm.guide_channels; a checkpoint from before the guide is set "
                  "has none yet)")


def evaluation_guidance(guidable: bool, configured: float | None, requested: float | None = None) -> float | None:
    """The guidance w a command samples at: `requested` (--guidance, pipe.sample's guidance), else the run's
    sample.guidance `configured`; None for a model guidance does not apply to (methods.guidable: neither
    class-conditional nor with an autoguidance guide), for which a requested w is a UserError."""
    if not guidable:
        if requested is not None:
            raise UserError(GUIDANCE_NEEDS.format(what="guidance w (--guidance)"))
        return None
    return configured if requested is None else requested


def evaluation_interval(guidable: bool, configured, requested: tuple | None,
                        guidance: float | None) -> tuple[float, float] | None:
    """The guidance interval (σ_lo, σ_hi) a command samples at: `requested` (--guidance-interval, () for its `none`:
    every step), else the run's sample.guidance_interval `configured`; None: guidance at every step, and wherever
    the `guidance` w is none or 0. A requested interval is a UserError for a model guidance does not apply to and
    at no guidance w."""
    if requested and not guidable:
        raise UserError(GUIDANCE_NEEDS.format(what="--guidance-interval"))
    if requested and not guidance:
        raise UserError("--guidance-interval applies to guided sampling: give a guidance w > 0 (--guidance W; the "
                        "run's sample.guidance is none or 0)")
    chosen = configured if requested is None else requested
    return tuple(chosen) if chosen and guidance else None


def guidance_and_interval(guidable: bool, sample_cfg, guidance: float | None, interval: tuple | None
                          ) -> tuple[float | None, tuple[float, float] | None, str]:
    """(w, interval, default-name suffix) a command samples at, from the requested `guidance` (--guidance) and
    `interval` (--guidance-interval) on top of the run's sample.* (evaluation_guidance, evaluation_interval,
    guidance_suffix)."""
    w = evaluation_guidance(guidable, sample_cfg.guidance, guidance)
    chosen = evaluation_interval(guidable, sample_cfg.guidance_interval, interval, w)
    own_interval = sample_cfg.guidance_interval if w else None
    return w, chosen, guidance_suffix(guidance, sample_cfg.guidance, chosen, own_interval)


def interval_setting(interval: tuple | None) -> dict:
    """The guidance interval as a results file's settings record it (a JSON list), only where one applies: a file
    of settings without one stays as it was."""
    return {"guidance_interval": list(interval)} if interval else {}


def interval_text(interval) -> str:
    """The guidance interval as commands print it after the guidance w: " at σ in (0.3, 10]", "" for none."""
    return " at σ in ({:g}, {:g}]".format(*interval) if interval else ""


def guidance_suffix(requested: float | None, configured: float | None, interval: tuple | None = None,
                    own_interval=None) -> str:
    """What the default names of samples drawn at a `requested` guidance w (--guidance) end with: "-w1.5" for a w
    other than the run's own sample.guidance `configured`, "" for none or its own; then "-gi0.3-10.0" for a guidance
    `interval` other than the run's `own_interval` ("-gi-all": every step, where the run has one)."""
    suffix = "" if requested is None or requested == configured else f"-w{requested:g}"
    if (tuple(own_interval) if own_interval else None) != interval:
        suffix += f"-gi{interval[0]!r}-{interval[1]!r}" if interval else "-gi-all"
    return suffix


def generate_samples(model, n: int, sampling: SamplingSettings | None, *, batch_size: int, seed: int,
                     labels: torch.Tensor | None = None, noise: torch.Tensor | None = None, progress: bool = True,
                     processes: Processes | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(uint8 n×C×H×W images on the CPU, labels or None) sampled in batches from one seeded generator, by
    ddpmlab.methods.sample_images from a network of `load_trained`.

    A diffusion model runs `sampling` (its prediction defaults to the network's own); a conditional one gets
    `labels` (default: the classes in turn). A single-pass network (VAE, GAN) decodes latents and takes no
    sampling (None). `noise` (n×C×H×W) fixes every x_T of a diffusion model, the generator then drawing only the
    samplers' later noise.

    With `processes` of several (torchrun), each draws its share (Processes.rows) of every batch with the same
    seeded draws as one process, so the images are the same, and rank 0 gathers and returns them all; the other
    ranks return None. Every batch but the last must give each process a share: UserError when batch_size is below
    the number of processes."""
    processes = processes or Processes()
    if batch_size < processes.world_size:
        raise UserError(f"--batch-size {batch_size} is below the {processes.world_size} processes sharing each batch; "
                        f"use at least {processes.world_size}")
    if labels is None:
        labels = class_labels(n, model.num_classes)
    generator = torch.Generator().manual_seed(seed)
    sampling = None if model.SINGLE_PASS else sampling
    what = f"{sampling.sampler}{sampling.steps or ''}" if sampling else model.SECTION
    shares = []  # this process's rows of each batch
    for start in tqdm(range(0, n, batch_size), desc=f"sampling {what}",
                      disable=not (progress and processes.is_main), unit="batch"):
        rows = processes.rows(min(batch_size, n - start))
        if len(rows) == 0:  # the last batch, smaller than the number of processes: no later batch needs the draws
            shares.append(torch.empty((0, *model.image_shape), dtype=torch.uint8))
            continue
        batch = slice(start, start + rows.total)
        images = sample_images(model, len(rows), generator, sampling,
                               rows.take(labels[batch]) if labels is not None else None,
                               rows.take(noise[batch]) if noise is not None else None, rows)
        shares.append(model_to_uint8(images).cpu())
    gathered = gather_to_main(shares, processes)  # [rank][batch]
    if gathered is None:
        return None
    return torch.cat([share for batch in zip(*gathered) for share in batch]), labels


def save_samples(path: Path, images: torch.Tensor, labels: torch.Tensor | None, settings: dict) -> Path:
    """Write images as uint8 N×H×W×C (like `ddpmlab sample`), labels (−1: none) and the settings JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images.permute(0, 2, 3, 1).numpy(),
                        labels=labels.numpy() if labels is not None else np.full(len(images), -1),
                        settings=np.str_(json.dumps(settings, sort_keys=True)))
    return path


def samples_settings(path: Path) -> dict | None:
    """The settings a samples file at `path` was saved with; None when there is no readable one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            settings = json.loads(str(data["settings"]))
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile):
        return None
    return settings if isinstance(settings, dict) else None


def load_samples(path: Path, settings: dict) -> torch.Tensor | None:
    """uint8 N×C×H×W images saved at `path` with exactly these settings; None when absent or different."""
    try:
        with np.load(path, allow_pickle=False) as data:  # never pickles: a planted object array is refused
            if json.loads(str(data["settings"])) != json.loads(json.dumps(settings, sort_keys=True)):
                return None
            images = data["images"]
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) != settings["n"]:
        return None  # not what this file's settings promise: draw the samples again
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# -- results of which weights -------------------------------------------------------------------------
WEIGHT_KEYS = ("checkpoint_step", "weights", "weights_digest")  # which weights a result or samples file is of


def saved_weights(path: Path) -> dict | None:
    """{WEIGHT_KEYS: values} of the results JSON (its "settings", or a sweep's top level) or samples .npz at `path`;
    None when there is none or it records no weights."""
    path = Path(path)
    if path.suffix == ".npz":
        settings = samples_settings(path)
    else:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        settings = results.get("settings", results) if isinstance(results, dict) else None
    if not isinstance(settings, dict) or not any(key in settings for key in WEIGHT_KEYS):
        return None
    return {key: settings.get(key) for key in WEIGHT_KEYS}


def check_same_weights(paths: list[Path], settings: dict) -> None:
    """UserError when a file at one of `paths` holds results or samples of other weights than `settings` names
    (another checkpoint step, the raw weights, a retrained run): writing there would replace them."""
    ours = {key: settings.get(key) for key in WEIGHT_KEYS}
    for path in paths:
        theirs = saved_weights(path)
        if theirs is not None and theirs != ours:
            raise UserError(f"{path} holds results of other weights (step {theirs['checkpoint_step']}, "
                            f"{theirs['weights']} weights, digest {theirs['weights_digest']}) than these (step "
                            f"{ours['checkpoint_step']}, {ours['weights']}, digest {ours['weights_digest']}); give "
                            f"another --name or --out to keep both, or delete it")
