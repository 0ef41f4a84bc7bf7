"""`ddpmlab train`: a new run from a preset or YAML config, or `--resume` of one."""

from __future__ import annotations

import signal
from pathlib import Path

from ddpmlab.config import Config, load_config
from ddpmlab.errors import UserError
from ddpmlab.train import Trainer


def default_run_dir(config_name: str, config: Config) -> Path:
    """runs/<config name>, or runs/<config name>-<method> when an override trains another method than the config
    file declares (`tiny method=dcgan` -> runs/tiny-dcgan), so that each method of a preset has its own folder."""
    name = Path(config_name).stem
    try:
        declared = load_config(config_name).method
    except UserError:  # the file alone is incomplete (its overrides complete it): it declares the default method
        declared = Config().method
    return Path("runs") / (name if config.method == declared else f"{name}-{config.method}")


def run(args) -> int:
    if args.resume:
        if args.config and "=" not in args.config:
            raise UserError("CONFIG and --resume are exclusive: --resume continues the run with its own config.yaml")
        if args.run_dir or args.force:
            raise UserError("--resume takes the run directory itself; --run-dir and --force do not apply to it")
        overrides = ([args.config] if args.config else []) + args.overrides
        trainer = Trainer.resume(args.resume, overrides, progress=not args.quiet)
    else:
        if not args.config:
            raise UserError("give a CONFIG (preset name or YAML path) or --resume DIR")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir or default_run_dir(args.config, config))
        trainer = Trainer(config, run_dir, force=args.force, progress=not args.quiet)
    say = print if trainer.processes.is_main else (lambda *line, **options: None)
    say(f"{trainer.run_dir}: {trainer.description}", flush=True)
    summary = trainer.train()
    state = "interrupted" if summary["interrupted"] else "finished"
    say(f"{state} at step {summary['step']} ({summary['wall_s']:.1f} s of training); run directory: {summary['run_dir']}")
    if summary["interrupted"]:
        say(f"resume with: ddpmlab train --resume {summary['run_dir']}")
        return 128 + (summary["signal"] or signal.SIGINT)  # the shell's convention: 130 after Ctrl-C
    return 0
