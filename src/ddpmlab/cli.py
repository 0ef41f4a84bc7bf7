"""`ddpmlab` command line: argument parsing and dispatch only; each command's work is in ddpmlab.commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings

from ddpmlab.commands import bench, compare, config, evaluate, export, pretrained, sample, score, train
from ddpmlab.config import INT64_MAX, INT64_MIN
from ddpmlab.distributed import launched_processes, process_group
from ddpmlab.errors import DdpmlabNote, DdpmlabWarning, Interrupted, UserError
from ddpmlab.samplers import (EVALUATION_STEPS, SAMPLERS, VARIANCES, default_steps_text,
                               parse_guidance_interval, spacings_text)
from ddpmlab.store.original_ddpm import ARCHS
from ddpmlab.version import __version__

GUIDANCE_INTERVAL_HELP = ("guide only the steps at noise levels sigma_t = sqrt((1 - abar_t)/abar_t) in (LO, HI] "
                          "(Kynkaanniemi et al. 2024; an autoguided model calls its guide only there), or none: every "
                          "step (default: the run's sample.guidance_interval)")
_PYTHON_FORMAT_WARNING = warnings.formatwarning


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes reported like every other: one line `error: ...` on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {_one_line(message)} (see {self.prog} --help)\n")


def _interval(text: str) -> tuple:
    """--guidance-interval's value: "LO,HI" finite noise levels with 0 <= LO < HI, or none: ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        return parse_guidance_interval(text.split(","))
    except UserError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI noise levels with 0 <= LO < HI (e.g. 0.3,10), "
                                         f"nor none") from None


def _int64(text: str) -> int:
    """An integer flag's value: any integer torch can hold (int64); argparse names the flag when it is not."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not an integer in -2**63..2**63-1")
    return value


def out_of_memory(exc: BaseException) -> bool:
    """True when `exc` says memory ran out: MemoryError, torch.OutOfMemoryError (CUDA), or the CPU allocator's
    RuntimeError ("can't allocate memory"): a batch or model too large for the machine, not a bug."""
    text = str(exc).lower()
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text)


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}  # str.splitlines' boundaries


def _one_line(message: str) -> str:
    """`message` with every line break escaped (\\n, \\x1e, ...): an error is one line, even when it quotes a path
    or a value that holds one."""
    return message.translate(_LINE_BREAKS)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddpmlab", description="Train, sample and evaluate DDPMs.")
    parser.add_argument("--version", action="version", version=f"ddpmlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a preset or YAML config",
                                description="ddpmlab train CONFIG [--run-dir DIR] [--force] [key=value ...] | "
                                            "ddpmlab train --resume DIR [key=value ...]")
    train.add_argument("config", nargs="?", help="preset name (see `ddpmlab presets`) or YAML path")
    train.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=2000")
    train.add_argument("--run-dir", help="output folder (default runs/<config name>; "
                       "runs/<config name>-<method> when method=... overrides the config's own)")
    train.add_argument("--force", action="store_true",
                       help="replace the run in an existing run directory (only the files ddpmlab wrote are removed)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="sample images from a trained run or checkpoint")
    sample.add_argument("source", help="run directory or checkpoint folder (EMA weights by default), one weights file, "
                                       "pretrained:NAME (see `ddpmlab pretrained list`), a diffusers folder, "
                                       "hf:ORG/NAME[@REVISION] or an original DDPM port's .ckpt/.pt/.pth")
    sample.add_argument("--out", required=True,
                        help="FILE.png for a grid, FILE.npz for arrays (images, labels), DIR/ for one PNG per image")
    sample.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="default: the run's sample.sampler")
    sample.add_argument("--steps", type=_int64, help="sampling steps (default: the run's sample.steps for its own sampler "
                                                  f"and ddim; otherwise {default_steps_text()})")
    sample.add_argument("--spacing", help=f"timestep spacing: {spacings_text()} (default: each sampler's first)")
    sample.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default: the run's sample.eta)")
    sample.add_argument("--variance", choices=VARIANCES, default=None,
                        help="ddpm's reverse variance: posterior (beta tilde) or beta, Ho et al.'s for FID 3.17 "
                             "(default: the run's sample.variance)")
    sample.add_argument("--n", type=_int64, default=None, help="number of images (default: the run's sample.n)")
    sample.add_argument("--batch-size", type=_int64, default=None, help="images per batch (default: the run's)")
    sample.add_argument("--seed", type=_int64, default=0)
    sample.add_argument("--class", dest="class_label", type=_int64, help="class index for a conditional model")
    sample.add_argument("--guidance", type=float,
                        help="guidance scale w: classifier-free for a class-conditional model, autoguidance for a "
                             "latent DDPM with a guide (ldm.guide_steps, ldm.guide_channels); default: the run's "
                             "sample.guidance")
    sample.add_argument("--guidance-interval", type=_interval, metavar="LO,HI|none",
                        help=GUIDANCE_INTERVAL_HELP)
    sample.add_argument("--per-class", action="store_true",
                        help="conditional models: --n images of every class (default 8), a grid with one labelled row each")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--arch", choices=ARCHS, default=None,
                        help="an original DDPM port's .ckpt/.pt/.pth: its architecture (default: read from the weights)")
    sample.add_argument("--device", default="auto", help="cpu, cuda or auto")
    sample.add_argument("--force", action="store_true",
                        help="replace an existing --out FILE, or with --out DIR/ the samples an earlier `ddpmlab sample` "
                             "wrote there")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("presets", help="list the shipped presets with a line on each")
    show = commands.add_parser("config", help="print the resolved config of a preset or YAML file, with overrides")
    show.add_argument("config", help="preset name or YAML path")
    show.add_argument("overrides", nargs="*", help="section.key=value")
    _add_eval_parser(commands)
    _add_compare_parser(commands)
    _add_bench_parser(commands)
    _add_pretrained_parser(commands)
    _add_export_parser(commands)
    return parser


def _add_export_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "export", help="write a trained diffusion model in another format: a diffusers DDPMPipeline folder",
        description="ddpmlab export SOURCE --format diffusers --out DIR: model_index.json, unet/config.json, "
                    "unet/diffusion_pytorch_model.safetensors and scheduler/scheduler_config.json, which "
                    "diffusers.DDPMPipeline.from_pretrained(DIR) loads. Baselines have no such format.")
    parser.add_argument("source", help="run directory or checkpoint folder (EMA weights by default), one weights file, "
                                       "pretrained:NAME, a diffusers folder, hf:ORG/NAME or an original DDPM port's "
                                       ".ckpt/.pt/.pth")
    parser.add_argument("--format", choices=export.FORMATS, default="diffusers", help="default diffusers")
    parser.add_argument("--out", required=True, help="a new or empty folder")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    parser.add_argument("--arch", choices=ARCHS, default=None,
                        help="an original DDPM port's .ckpt/.pt/.pth: its architecture (default: read from the weights)")
    return parser


def _add_pretrained_parser(commands) -> argparse.ArgumentParser:
    pretrained = commands.add_parser(
        "pretrained", help="the models that ship with ddpmlab: list them, or export a run as one (maintainers)",
        description="Shipped models are used as pretrained:NAME wherever a run directory is accepted (sample, eval, "
                    "compare suites). $DDPMLAB_PRETRAINED_DIR replaces the package's folder.")
    kinds = pretrained.add_subparsers(dest="pretrained_command", required=True)
    kinds.add_parser("list", help="the shipped models with their training and scores")
    export = kinds.add_parser("export", help="write a run's EMA weights, config, info.json and metrics.csv as "
                                             "pretrained model NAME (refused over 20 MB)")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (its newest checkpoint) or a checkpoint "
                                                          "folder, e.g. RUN_DIR/checkpoints/best")
    export.add_argument("name", metavar="NAME", help="lowercase letters, digits, . _ - (e.g. fashion-mnist)")
    export.add_argument("--fp16", action="store_true", help="store the weights as float16 (loaded as float32)")
    export.add_argument("--scores", action="append", default=[], metavar="RESULTS_JSON",
                        help="a `ddpmlab eval` results file of these weights (repeatable), recorded with its protocol")
    export.add_argument("--machine", help="where it was trained (default: a description of this machine)")
    export.add_argument("--command", dest="train_command",
                        help="how it was trained (default: ddpmlab train on the shipped config.yaml)")
    export.add_argument("--force", action="store_true", help="replace an existing NAME")
    return pretrained


def _add_compare_parser(commands) -> argparse.ArgumentParser:
    compare = commands.add_parser(
        "compare", help="train and evaluate a suite of models the same way; write report.md and index.html",
        description="ddpmlab compare SUITE: train the suite's runs that RUNS_DIR lacks (resuming unfinished ones), "
                    "evaluate every model with the same metrics, samples and seed, measure training stability, and "
                    "write REPORT_DIR/report.md, a self-contained REPORT_DIR/index.html and REPORT_DIR/results.json.")
    compare.add_argument("suite", metavar="SUITE", help="a shipped suite (cpu-demo, fashion-mnist, cifar10) or a YAML path")
    compare.add_argument("--runs-dir", default="runs/compare", help="where the suite's runs are trained (default runs/compare)")
    compare.add_argument("--out", metavar="REPORT_DIR", help="report folder (default reports/SUITE)")
    compare.add_argument("--n", type=_int64, help="samples per model (default: the suite's n)")
    compare.add_argument("--metrics", help="comma-separated fd,fid,kid,pr,nll (default: the suite's; speed always)")
    compare.add_argument("--classifier", help="FD classifier file (default: the suite's, else the dataset's own)")
    compare.add_argument("--device", default="auto", help="cpu, cuda or auto (evaluation; training uses train.device)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    return compare


EVAL_TOOLS = ("train-classifier", "real")


def _add_eval_parser(commands) -> argparse.ArgumentParser:
    evaluate = commands.add_parser(
        "eval", help="measure a trained run: FD, FID, KID, precision/recall, NLL, speed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ddpmlab eval RUN_DIR [options]: sample --n images once (kept in RUN_DIR/eval/NAME.npz), compare "
                    "them with the dataset's held-out split, write RUN_DIR/eval/NAME.json and print a table.\n"
                    "ddpmlab eval SAMPLES --reference REF [options]: score images (a .npz, a folder of images or "
                    "a dataset split NAME:SPLIT) against REF (the same forms); write SAMPLES-vs-REF.json beside "
                    "SAMPLES.\n"
                    "ddpmlab eval train-classifier DATASET [...]: train the classifier behind FD (see its --help).\n"
                    "ddpmlab eval real DATASET [...]: the train-vs-test distance, the floor for any model.",
        epilog="metrics: fd = Frechet distance of the dataset classifier's features (fast on a CPU); fid, kid, pr = "
               "Frechet distance, kernel distance and precision/recall of TF-Inception features (the published "
               "numbers); nll = the variational bound in bits/dim on held-out images (T network passes per image); "
               "speed = sampling images/s on the warm model, peak memory, training cost from metrics.csv.\n"
               "Default on a CPU: fd,speed, because TF-Inception runs at about 12 images/s on a 2-core CPU (the "
               "classifier: over 4000), so FID on 10000 samples plus 10000 reference images takes about half an "
               "hour; on a GPU: all of them.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR",
                          help="a run directory (its newest checkpoint is evaluated), one of its checkpoint folders, "
                               "one weights file (on its own: results in FILE's folder/eval/FILE unless --out), "
                               "or pretrained:NAME (results in eval/pretrained-NAME unless --out); with --reference "
                               "also SAMPLES: a .npz with an `images` array, a folder of images or NAME:SPLIT")
    evaluate.add_argument("--reference", metavar="REF",
                          help="what to compare with: for SAMPLES a .npz, a folder of images or a dataset split "
                               "NAME:SPLIT (e.g. cifar10:train); for a model a dataset split (default: its dataset's "
                               "held-out split)")
    evaluate.add_argument("--metrics", help="comma-separated: fid,kid,pr,fd,nll,speed (default: fd,speed on a CPU, all on a GPU)")
    evaluate.add_argument("--n", type=_int64, help="images to sample (default 10000); with SAMPLES, images used of "
                                                   "each side (default all)")
    evaluate.add_argument("--ref-n", type=_int64, help="held-out real images to compare with (default 10000); with "
                                                       "SAMPLES, of REF (default: --n)")
    evaluate.add_argument("--sampler", choices=SAMPLERS, default=None, help="default ddim, the same for every run")
    evaluate.add_argument("--steps", type=_int64, help=f"sampling steps (default: {EVALUATION_STEPS} for ddim, capped at "
                                                    f"T; otherwise {default_steps_text()})")
    evaluate.add_argument("--spacing", help="the sampler's timestep spacing (default: its own)")
    evaluate.add_argument("--sweep", metavar="SPEC",
                          help="quality against cost: SPEC like ddpm:1000,ddim:10,20,50,dpm-solver++:10,20,heun:10 "
                               "samples --n images per point from the same x_T and writes RUN_DIR/eval/sweep-*.json, "
                               ".png and .npz (metrics fd, fid, kid, pr; --sampler, --steps, --spacing, --eta are refused)")
    evaluate.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default 0)")
    evaluate.add_argument("--variance", choices=VARIANCES, default=None,
                          help="ddpm's reverse variance: posterior or beta (default: the run's sample.variance)")
    evaluate.add_argument("--guidance", type=float,
                          help="guidance scale w of a class-conditional model (classifier-free) or of a latent DDPM "
                               "with a guide (autoguidance; default: its sample.guidance)")
    evaluate.add_argument("--guidance-interval", type=_interval, metavar="LO,HI|none", help=GUIDANCE_INTERVAL_HELP)
    evaluate.add_argument("--batch-size", type=_int64, help="images per sampling/NLL batch (default: the run's sample.batch_size)")
    evaluate.add_argument("--seed", type=_int64, help="sampling seed (default 0)")
    evaluate.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda or auto")
    evaluate.add_argument("--name", help="name of the samples and results files (default e.g. step_0010000-ddim50-n10000-seed0, "
                                         "step_0010000-nll-n1000-t1000 for nll alone); "
                                         "letters, digits, . _ - only, others are replaced")
    evaluate.add_argument("--out", help="folder for the results and samples (default RUN_DIR/eval), e.g. for a "
                                        "read-only run; with SAMPLES, the results FILE.json (default "
                                        "SAMPLES-vs-REF.json)")
    evaluate.add_argument("--force", action="store_true", help="with SAMPLES: replace a results file of other images")
    evaluate.add_argument("--classifier", help="FD classifier file (default: the shipped or cached one for the dataset)")
    evaluate.add_argument("--nll-n", type=_int64, help="held-out images for NLL (default 1000)")
    evaluate.add_argument("--nll-timesteps", type=_int64, help="NLL terms per image (default: all T; fewer is faster, noisier)")
    evaluate.add_argument("--speed-repeats", type=_int64, help="timed sampling batches, median taken (default 3)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    return evaluate


def _eval_tool_parser(tool: str) -> argparse.ArgumentParser:
    if tool == "train-classifier":
        parser = _Parser(
            prog="ddpmlab eval train-classifier",
            description="Train the small classifier whose penultimate features give FD, and save it as safetensors "
                        "with a JSON of its test accuracy beside it.")
        parser.add_argument("dataset", metavar="DATASET", help="data.name, e.g. fashion-mnist")
        parser.add_argument("overrides", nargs="*", default=[], help="data.key=value, e.g. data.random_flip=true")
        parser.add_argument("--out", help="FILE.safetensors (default: ~/.cache/ddpmlab/classifiers/DATASET.safetensors, "
                                          "where `ddpmlab eval` looks)")
        parser.add_argument("--steps", type=_int64, default=3000, help="optimizer steps (default 3000)")
        parser.add_argument("--batch-size", type=_int64, default=128)
        parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (cosine decay)")
        parser.add_argument("--seed", type=_int64, default=0)
    else:
        parser = _Parser(
            prog="ddpmlab eval real",
            description="Distances between N training images and N held-out images of a dataset: the floor any model "
                        "is compared with.")
        parser.add_argument("dataset", metavar="DATASET", help="data.name, e.g. fashion-mnist")
        parser.add_argument("overrides", nargs="*", default=[], help="data.key=value, e.g. data.root=/data")
        parser.add_argument("--metrics", help="comma-separated: fd,fid,kid,pr (default: fd on a CPU, fd,fid on a GPU)")
        parser.add_argument("--n", type=_int64, default=10000, help="images of each split (default 10000)")
        parser.add_argument("--classifier", help="FD classifier file (default: the shipped or cached one)")
        parser.add_argument("--out", help="results JSON (default runs/real/DATASET.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _add_bench_parser(commands) -> argparse.ArgumentParser:
    bench = commands.add_parser("bench", help="time training and sampling steps, and against diffusers' UNet2DModel",
                                description="Throughput on random data; nothing is downloaded or written. --json "
                                            "prints one JSON line whose images_per_s is the median.")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    train = kinds.add_parser("train", help="full training steps of CONFIG's method (DDPM, VAE, GAN): images/s, "
                                             "FLOPs, matmul share")
    train.add_argument("config", help="preset name or YAML path")
    train.add_argument("overrides", nargs="*", help="section.key=value")
    train.add_argument("--steps", type=_int64, default=5, help="timed steps, median taken (default 5)")
    train.add_argument("--warmup", type=_int64, default=1, help="untimed steps first (default 1)")
    _add_bench_options(train, None, "the config's train.batch_size")
    sample = kinds.add_parser("sample", help="images/s and network evaluations/s of a sampler on CONFIG's U-Net, "
                                               "or of a baseline's one pass")
    sample.add_argument("config", help="preset name or YAML path")
    sample.add_argument("overrides", nargs="*", help="section.key=value")
    sample.add_argument("--sampler", help=", ".join(SAMPLERS) + " (a diffusion model's; a baseline samples in one pass)")
    sample.add_argument("--steps", type=_int64, help=f"sampling steps (default: {default_steps_text()})")
    sample.add_argument("--repeats", type=_int64, default=3, help="timed batches, median taken (default 3)")
    _add_bench_options(sample, None, "the config's sample.batch_size")
    peers = kinds.add_parser("peers", help="ours (cifar10 preset) against diffusers' UNet2DModel, paired rounds "
                                           "(needs pip install -e .[peers])")
    peers.add_argument("overrides", nargs="*", help="train.key=value, applied to both sides (e.g. train.channels_last=true)")
    peers.add_argument("--rounds", type=_int64, default=5, help="paired rounds, ours then theirs (default 5)")
    peers.add_argument("--steps", type=_int64, default=1, help="timed steps per side per round (default 1)")
    peers.add_argument("--warmup", type=_int64, default=1, help="untimed steps of each side first (default 1)")
    _add_bench_options(peers, 8, "8")
    return bench


def _add_bench_options(parser: argparse.ArgumentParser, batch_size: int | None, batch_help: str) -> None:
    parser.add_argument("--batch-size", type=_int64, default=batch_size, help=f"images per step (default {batch_help})")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A DdpmlabWarning as one line `warning: ...` (a DdpmlabNote as `note: ...`); any other warning as Python
    prints it."""
    if issubclass(category, DdpmlabWarning):
        return f"{'note' if issubclass(category, DdpmlabNote) else 'warning'}: {_one_line(str(message))}\n"
    return _PYTHON_FORMAT_WARNING(message, category, filename, lineno, line)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning on stderr as _format_warning writes it (the stderr of now, which tests may have replaced)."""
    (file or sys.stderr).write(_format_warning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print `error: ...` on stderr and return 2, the library's warnings and notes are
    shown as one line each (the same one once per command)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", DdpmlabWarning)
        warnings.showwarning = _show_warning
        return _main(sys.argv[1:] if argv is None else list(argv))


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:  # `torchrun ... -m ddpmlab -- sample ... --n 64`: the `--` keeps torchrun off our options
        argv = argv[1:]
    if argv[:1] == ["eval"] and len(argv) > 1 and argv[1] in EVAL_TOOLS:
        return _run_eval_tool(argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # key=value items given after options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"train": train.run, "sample": sample.run, "presets": config.presets, "config": config.show,
                "eval": _run_eval, "compare": compare.run, "bench": bench.run, "pretrained": pretrained.run,
                "export": export.run}
    return _handle(handlers[args.command], args, splits_over_processes=args.command in DISTRIBUTED_COMMANDS)


def _run_eval(args) -> int:
    """`ddpmlab eval`: a model's samples, or with --reference and images as SAMPLES, those images."""
    images = args.reference is not None and score.names_images(args.run_dir)
    return (score.run if images else evaluate.run)(args)


def _run_eval_tool(argv: list[str]) -> int:
    """`ddpmlab eval train-classifier|real ...`: their own parsers, since `ddpmlab eval` itself takes a RUN_DIR."""
    tool = argv[1]
    parser = _eval_tool_parser(tool)
    args, extra = parser.parse_known_args(argv[2:])
    if all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra  # key=value items given after options
    else:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv
    return _handle(evaluate.run_train_classifier if tool == "train-classifier" else evaluate.run_real, args)


DISTRIBUTED_COMMANDS = ("train", "sample", "eval")  # the commands that share their work among torchrun's processes


def _handle(handler, args, splits_over_processes: bool = False) -> int:
    """Run a command's handler; under torchrun with several processes, inside their process group."""
    try:
        group = contextlib.nullcontext()
        if "WORLD_SIZE" in os.environ:  # started by torchrun
            if launched_processes() > 1 and not splits_over_processes:
                raise UserError(f"only {', '.join(DISTRIBUTED_COMMANDS)} share their work among torchrun's processes; "
                                f"run this command as one process, without torchrun")
            group = process_group()
        with group:
            return handler(args)
    except UserError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # RuntimeError: torch's allocators (torch.OutOfMemoryError included)
        if not out_of_memory(exc):
            raise
        size = re.search(r"tried to allocate ([\d.]+ ?\w+)", str(exc), re.IGNORECASE)
        print(f"error: out of memory{f' (tried to allocate {size.group(1)})' if size else ''}; use a smaller "
              f"--batch-size or --n, or train.batch_size and the model's size", file=sys.stderr)
        return 2
    except Interrupted as exc:  # stopped by a signal after saving its work
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
