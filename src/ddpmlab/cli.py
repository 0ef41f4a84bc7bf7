"""`ddpmlab` command line: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddpmlab.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpmlab", description="Train, sample and evaluate DDPMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a preset or YAML config",
                                description="ddpmlab train CONFIG [--run-dir DIR] [--force] [key=value ...] | "
                                            "ddpmlab train --resume DIR [key=value ...]")
    train.add_argument("config", nargs="?", help="preset name (see `ddpmlab presets`) or YAML path")
    train.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=2000")
    train.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    train.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="sample images from a trained run or checkpoint")
    sample.add_argument("source", help="run directory, checkpoint folder or weights file")
    sample.add_argument("--out", required=True, help="FILE.png for a grid, FILE.npz for arrays (images, labels)")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default=None, help="default: the run's sample.sampler")
    sample.add_argument("--steps", type=int, help="DDIM steps (default: the run's sample.steps)")
    sample.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default 0)")
    sample.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    sample.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the run's)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--class", dest="class_label", type=int, help="class index for a conditional model")
    sample.add_argument("--guidance", type=float, help="classifier-free guidance scale w")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--device", default="auto", help="cpu, cuda or auto")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("presets", help="list the shipped presets")
    return parser


def _train(args) -> int:
    from ddpmlab.config import load_config
    from ddpmlab.train import Trainer

    if args.resume:
        overrides = ([args.config] if args.config else []) + args.overrides
        trainer = Trainer.resume(args.resume, overrides, progress=not args.quiet)
    else:
        if not args.config:
            raise UserError("give a CONFIG (preset name or YAML path) or --resume DIR")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
        trainer = Trainer(config, run_dir, force=args.force, progress=not args.quiet)
    summary = trainer.train()
    state = "interrupted" if summary["interrupted"] else "finished"
    print(f"{state} at step {summary['step']} ({summary['wall_s']:.1f} s of training); run directory: {summary['run_dir']}")
    if summary["interrupted"]:
        print(f"resume with: ddpmlab train --resume {summary['run_dir']}")
    return 0


def _sample(args) -> int:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from ddpmlab.images import model_to_uint8, save_grid
    from ddpmlab.samplers import sample
    from ddpmlab.train.build import load_trained

    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise UserError(f"--out must end in .png (grid) or .npz (arrays), got {out}")
    if args.n <= 0 or (args.batch_size is not None and args.batch_size <= 0):
        raise UserError("--n and --batch-size must be positive")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError("--eta must be in [0, 1]")
    model, schedule, config, step = load_trained(args.source, use_ema=not args.no_ema, device=args.device)
    method = args.sampler or config.sample.sampler
    steps = args.steps or min(config.sample.steps, schedule.T)
    if method == "ddim" and not 1 <= steps <= schedule.T:
        raise UserError(f"--steps must be in 1..{schedule.T} for this model")
    labels = None
    if model.num_classes:
        if args.class_label is not None and not 0 <= args.class_label < model.num_classes:
            raise UserError(f"--class must be in 0..{model.num_classes - 1}")
        labels = (torch.full((args.n,), args.class_label) if args.class_label is not None
                  else torch.arange(args.n) % model.num_classes)
    elif args.class_label is not None or args.guidance is not None:
        raise UserError("--class and --guidance need a class-conditional model (model.conditional=true)")
    guidance = args.guidance if args.guidance is not None else config.sample.guidance
    batch_size = args.batch_size or config.sample.batch_size
    generator = torch.Generator().manual_seed(args.seed)
    shape = (model.spec.in_channels, model.spec.image_size, model.spec.image_size)
    batches = []
    for start in tqdm(range(0, args.n, batch_size), desc=f"sampling {method}", disable=args.quiet):
        count = min(batch_size, args.n - start)
        batch_labels = labels[start:start + count] if labels is not None else None
        batches.append(sample(model, schedule, (count, *shape), method=method, steps=steps,
                              eta=args.eta if args.eta is not None else config.sample.eta, generator=generator,
                              labels=batch_labels, guidance_scale=guidance if labels is not None else None,
                              clip_denoised=config.sample.clip_denoised).cpu())
    images = model_to_uint8(torch.cat(batches))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(images, out, scale=2)
    else:
        np.savez_compressed(out, images=images.permute(0, 2, 3, 1).numpy(),
                            labels=(labels.numpy() if labels is not None else np.full(args.n, -1)))
    print(f"wrote {args.n} samples ({method}, {steps if method == 'ddim' else schedule.T} steps, step {step}) to {out}")
    return 0


def _presets(args) -> int:
    from ddpmlab.config import preset_names

    print("\n".join(preset_names()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print `error: ...` on stderr and return 2."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train" and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # key=value items given after options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"train": _train, "sample": _sample, "presets": _presets}
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
