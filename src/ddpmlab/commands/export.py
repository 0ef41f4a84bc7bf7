"""`ddpmlab export SOURCE --format diffusers --out DIR`: a diffusion model as a diffusers DDPMPipeline folder."""

from __future__ import annotations

from pathlib import Path

from ddpmlab.errors import UserError
from ddpmlab.paths import check_writable_folder
from ddpmlab.store.diffusers_format import write_diffusers
from ddpmlab.store.load import load_trained

FORMATS = ("diffusers",)


def check_export_folder(out: Path) -> None:
    """UserError unless --out is a new or empty folder that can be written."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder; give a new folder")
    check_writable_folder(out, "--out")


def run(args) -> int:
    """Write SOURCE's (EMA) network, schedule and sampling settings as a DDPMPipeline folder."""
    # Check the request.
    if args.format not in FORMATS:
        raise UserError(f"--format {args.format!r} is not one of {', '.join(FORMATS)}")
    out = Path(args.out)
    check_export_folder(out)

    # Load the model.
    net, _, config, step = load_trained(args.source, use_ema=not args.no_ema, device="cpu", arch=args.arch)

    # Write the folder.
    write_diffusers(net, config, out)
    weights = "raw" if args.no_ema else "EMA"
    print(f"wrote {args.source} (step {step}, {weights} weights) as a diffusers DDPMPipeline to {out}; load it with "
          f"diffusers.DDPMPipeline.from_pretrained")
    return 0
