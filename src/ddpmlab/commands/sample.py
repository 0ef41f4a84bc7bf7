"""`ddpmlab sample`: images from a trained run, a checkpoint, one weights file or a pretrained model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ddpmlab.distributed import current, rank_device
from ddpmlab.errors import UserError
from ddpmlab.eval.samples import (generate_samples, guidance_and_interval, interval_setting, interval_text,
                                  save_samples)
from ddpmlab.data.folder import EXTENSIONS as IMAGE_EXTENSIONS
from ddpmlab.images import image_file_names, save_grid, save_images, save_labelled_grid
from ddpmlab.methods import guidable, samples_in_one_pass, sampling_nfe
from ddpmlab.paths import check_new_file, check_writable_folder
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.load import load_trained, stored_class_names, stored_method, weights_file
from ddpmlab.store.hub import hub_source
from ddpmlab.store.manifest import record_in_own_folder, record_written, recorded
from ddpmlab.store.pretrained import pretrained_name

SAMPLE_NAME = re.compile(r"\d{6,}\.png")  # images.image_file_names
DIFFUSION_FLAGS = (("sampler", "--sampler"), ("steps", "--steps"), ("spacing", "--spacing"), ("eta", "--eta"),
                   ("variance", "--variance"),
                   ("guidance", "--guidance"), ("guidance_interval", "--guidance-interval"), ("class_label", "--class"),
                   ("per_class", "--per-class"),
                   ("sweep", "--sweep"))


def check_diffusion_flags(args, source: str) -> None:
    """UserError naming the first flag given that only a diffusion model reads (sampler, steps, eta, guidance,
    classes) when the run at `source` samples in one pass (VAE, DCGAN, VAE-GAN)."""
    given = [flag for name, flag in DIFFUSION_FLAGS if getattr(args, name, None) is not None
             and getattr(args, name) is not False]  # `--class 0` is given, though 0 == False
    if given:
        method = stored_method(source, not args.no_ema)
        if samples_in_one_pass(method):
            raise UserError(f"{method} samples in one pass; {given[0]} applies to diffusion models")


def check_guidance(guidance: float | None) -> None:
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UserError(f"--guidance must be a finite number >= 0 (0: no guidance), got {guidance}")


def check_sample_output(out: str, force: bool = False) -> Path:
    """The --out path, checked before any compute: FILE.png, FILE.npz, or DIR/ (a folder of PNGs; see
    `earlier_samples`)."""
    path = Path(out)
    if out.endswith(("/", "\\")):
        check_writable_folder(path, "--out")
        earlier_samples(path, force)
        return path
    if path.is_dir():
        raise UserError(f"--out {out} is an existing folder; end it with / to write one PNG per image there")
    if path.suffix not in (".png", ".npz"):
        raise UserError(f"--out must end in .png (grid), .npz (arrays) or / (one PNG per image), got {out}")
    check_new_file(path, "--out", force)
    return path


def earlier_samples(folder: Path, force: bool) -> list[Path]:
    """The images an earlier `ddpmlab sample` wrote in `folder` (its manifest lists them), which `force` lets this one
    replace. A folder of samples holds one draw, as metrics that read folders count every image in it: UserError
    when it holds images ddpmlab's samples are not, or earlier samples without `force`."""
    if not folder.is_dir():
        return []
    listed = recorded(folder) or set()
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    foreign = [p.name for p in images if p.name not in listed or not SAMPLE_NAME.fullmatch(p.name)]
    if foreign:
        raise UserError(f"--out {folder} holds {len(foreign)} image(s) that are not samples ddpmlab wrote ("
                        + ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
                        + "), which metrics reading the folder would count with these; choose an empty folder")
    if images and not force:
        raise UserError(f"--out {folder} holds {len(images)} samples an earlier `ddpmlab sample` wrote; use --force to "
                        f"replace them, or choose an empty folder")
    return images


def write_folder(out: Path, images: torch.Tensor, force: bool) -> None:
    """One PNG per image in folder `out`, recorded in its manifest first; with `force`, the earlier samples there go."""
    for stale in earlier_samples(out, force):
        stale.unlink()
    record_in_own_folder(out, *(out / name for name in image_file_names(len(images))))
    save_images(images, out)


def run(args) -> int:
    """`ddpmlab sample SOURCE --out ...`: images of a diffusion model by its sampler, of a baseline in one pass."""
    # Check the request.
    out = check_sample_output(args.out, args.force)
    if (args.n is not None and args.n <= 0) or (args.batch_size is not None and args.batch_size <= 0):
        raise UserError("--n and --batch-size must be positive")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError("--eta must be in [0, 1]")
    check_guidance(args.guidance)
    check_diffusion_flags(args, args.source)

    # Load the model.
    processes = current()
    device = rank_device(resolve_device(args.device), processes)
    model, schedule, config, step = load_trained(args.source, use_ema=not args.no_ema, device=str(device),
                                                 arch=args.arch)
    if model.SINGLE_PASS:
        return sample_one_pass(args, out, model, config, step, processes)

    # Settle the sampling settings and the labels.
    method = args.sampler or config.sample.sampler
    if method != "ddim" and args.eta is not None:
        raise UserError(f"--eta applies to --sampler ddim only, not {method}")
    if method != "ddpm" and args.variance is not None:
        raise UserError(f"--variance applies to --sampler ddpm only, not {method}")
    guidance, interval, _ = guidance_and_interval(guidable(model), config.sample, args.guidance,
                                                  args.guidance_interval)  # w None: unguided
    sampling = SamplingSettings.of_run(config.sample, schedule.T, method, args.steps, spacing=args.spacing,
                                       eta=args.eta, variance=args.variance)
    sampling = sampling.with_(guidance=guidance, guidance_interval=interval).resolved(schedule.T)
    steps, spacing, nfe, guidance = sampling.steps, sampling.spacing, sampling_nfe(model, sampling), sampling.guidance
    eta = sampling.eta if method == "ddim" else None
    variance = sampling.variance if method == "ddpm" else None
    n = args.n or (8 if args.per_class else config.sample.n)
    labels = None
    if model.num_classes:
        if args.class_label is not None and not 0 <= args.class_label < model.num_classes:
            raise UserError(f"--class must be in 0..{model.num_classes - 1}")
        if args.per_class and args.class_label is not None:
            raise UserError("--per-class and --class are exclusive")
        if args.per_class:
            labels = torch.arange(model.num_classes).repeat_interleave(n)
            n = len(labels)
        else:
            labels = (torch.full((n,), args.class_label) if args.class_label is not None
                      else torch.arange(n) % model.num_classes)
    elif args.class_label is not None or args.per_class:
        raise UserError("--class and --per-class need a class-conditional model (model.conditional=true)")

    # Draw samples.
    generated = generate_samples(model, n, sampling, batch_size=args.batch_size or config.sample.batch_size,
                                 seed=args.seed, labels=labels, progress=not args.quiet, processes=processes)
    if generated is None:  # a process other than rank 0: it sampled its share, rank 0 writes
        return 0

    # Write them.
    images, labels = generated
    weights = weights_file(args.source, not args.no_ema)
    class_names = (stored_class_names(args.source, model.num_classes, not args.no_ema)
                   if args.per_class and out.suffix == ".png" else None)
    write_samples(args, out, images, labels, {"source": str(args.source), "weights": str(weights), "step": step,
                                              "sampler": method, "steps": steps, "spacing": spacing, "nfe": nfe,
                                              "eta": eta, "variance": variance, "seed": args.seed,
                                              "guidance": guidance, **interval_setting(interval)}, class_names)
    details = f"{method}, {steps} steps, {spacing} spacing, {nfe} network evaluations" + (
        f", eta {eta}" if method == "ddim" else "") + (f", variance {variance}" if variance else "") + (
        f", guidance {guidance}" + interval_text(interval) if guidance else "")
    print(f"wrote {n} samples ({details}) from {weights_label(args.source, weights)} at step {step} to {out}")
    return 0


def write_samples(args, out: Path, images: torch.Tensor, labels: torch.Tensor | None, settings: dict,
                  class_names: list[str] | None = None) -> None:
    """Write uint8 images where --out says: one PNG each in a folder (DIR/), a grid (FILE.png; one labelled row per
    class with `class_names`), or arrays with `settings` (FILE.npz). A file in a folder ddpmlab keeps a list of (a run
    directory) is listed there first, so that the run's `--force` replaces it with the rest of the run."""
    if args.out.endswith(("/", "\\")):
        write_folder(out, images, args.force)
        return
    record_written(out.parent, out)
    if out.suffix == ".png" and class_names is not None:
        save_labelled_grid(images, class_names, out)
    elif out.suffix == ".png":
        save_grid(images, out, scale=2)
    else:
        save_samples(out, images, labels, settings)


def weights_label(source: str, weights: Path) -> str:
    """How `sample` names the weights it read: "pretrained:NAME", "hf:ORG/NAME", or the weights file's name."""
    return source if pretrained_name(source) is not None or hub_source(source) is not None else weights.name


def sample_one_pass(args, out: Path, model, config, step: int, processes) -> int:
    """`ddpmlab sample` for a single-pass run (VAE, DCGAN, VAE-GAN): --n images, each one pass of the network."""
    n = args.n or config.sample.n
    generated = generate_samples(model, n, None, batch_size=args.batch_size or config.sample.batch_size, seed=args.seed,
                                 progress=not args.quiet, processes=processes)
    if generated is None:  # a process other than rank 0: it sampled its share, rank 0 writes
        return 0
    images = generated[0]
    weights = weights_file(args.source, not args.no_ema)
    write_samples(args, out, images, None, {"source": str(args.source), "weights": str(weights), "step": step,
                                            "method": config.method, "seed": args.seed})
    print(f"wrote {n} samples ({config.method}, one pass) from {weights_label(args.source, weights)} at step {step} "
          f"to {out}")
    return 0
