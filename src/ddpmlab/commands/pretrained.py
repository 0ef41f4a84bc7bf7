"""`ddpmlab pretrained list|export`: the shipped models as a table, and a run written out as one (maintainers)."""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save_file

from ddpmlab.config import save_config
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.eval.samples import interval_setting, interval_text
from ddpmlab.eval.scores import FEATURE_METRICS, METRICS, SHORT_LABELS
from ddpmlab.methods import images_seen, rebuild_method, trained_parameters
from ddpmlab.report.render import fmt_seconds
from ddpmlab.samplers import default_spacing
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import config_of, find_checkpoint
from ddpmlab.store.pretrained import (CONFIG_FILE, FORMAT, INFO_FILE, METRICS_FILE, WEIGHTS_FILE, as_float32,
                                      pretrained_names, pretrained_root, read_info, stored_state)
from ddpmlab.version import __version__

# the `ddpmlab eval` results keys worth shipping, in the order `pretrained list` shows them (labels: the registry's)
SCORE_KEYS = ("fid_inception", "fd_classifier", "kid_inception", "nll_bits_per_dim", "precision_inception",
              "recall_inception", "class_accuracy")
SCORE_LABELS = {key: SHORT_LABELS[key] for key in SCORE_KEYS}
# which protocol a score key was measured under: the samples' (sampler, n, reference) or the NLL bound's own
SCORE_GROUP = {key: "nll" if key in METRICS["nll"].labels else "samples" for key in SCORE_KEYS}


MAX_BYTES = 20_000_000  # a shipped model's folder stays under 20 MB (issue 15)


def score_summary(score: dict) -> str:
    """One score entry of info.json as text, each metric beside what it was measured on, e.g. "FID 8.12, FD 0.41
    (10000 samples vs 10000 test, dpm-solver++ 20 NFE, seed 0); NLL bits/dim 3.9 (200 test images, 100 timesteps)"."""
    metrics, weights = score.get("metrics", {}), ""
    if score.get("measured_on", "shipped weights") != "shipped weights":
        weights = f"; {score['measured_on']}"
    parts = []
    for group in ("samples", "nll"):
        values = ", ".join(f"{label} {metrics[key]:.4g}" for key, label in SCORE_LABELS.items()
                           if SCORE_GROUP[key] == group and isinstance(metrics.get(key), (int, float)))
        if values:
            protocol = sampling_text(score.get("protocol")) if group == "samples" else nll_text(
                score.get("protocols", {}).get("nll"))
            parts.append(f"{values} ({protocol}{weights})")
    return "; ".join(parts)


def sampling_text(protocol: dict | None) -> str:
    """What the metrics of samples were measured on, e.g. "2000 samples vs 10000 test, ddim 50 NFE, seed 0" (with the
    spacing, as "dpm-solver++ 20 NFE (logSNR spacing)", where it is not the sampler's default)."""
    if not protocol:
        return "protocol not recorded"
    sampler = protocol.get("sampler")
    nfe, steps = protocol.get("nfe"), protocol.get("steps")
    how = sampler if nfe in (None, 1) else f"{sampler} {nfe} NFE" if steps in (None, nfe) else \
        f"{sampler} {steps} steps, {nfe} NFE"  # Heun's 2 evaluations a step, autoguidance's 2 networks
    if protocol.get("spacing") not in (None, default_spacing(sampler)):  # a spacing other than the sampler's own
        how += f" ({protocol['spacing']} spacing)"
    if protocol.get("guidance"):
        how += f", guidance {protocol['guidance']:g}" + interval_text(protocol.get("guidance_interval"))
    return (f"{protocol.get('n')} samples vs {protocol.get('reference_n')} {protocol.get('reference_split')}, {how}, "
            f"seed {protocol.get('seed')}")


def nll_text(protocol: dict | None) -> str:
    """What an NLL bound was measured on, e.g. "200 test images, 100 timesteps"."""
    if not protocol:
        return "images and timesteps not recorded"
    return f"{protocol.get('n')} {protocol.get('split')} images, {protocol.get('timesteps')} timesteps"


def pretrained_table(root: str | Path | None = None) -> str:
    """`ddpmlab pretrained list`: one block per shipped model (method, classes, training, scores). A model whose
    info.json cannot be read or shown is left out with a DdpmlabWarning naming it; the others are listed."""
    names = pretrained_names(root)
    if not names:
        return f"no pretrained models in {pretrained_root(root)}"
    blocks = []
    for name in names:
        try:
            blocks.append(model_block(name, read_info(pretrained_root(root) / name)))
        except UserError as exc:
            warnings.warn(f"pretrained:{name} left out: {exc}", DdpmlabWarning)
        except (AttributeError, KeyError, TypeError, ValueError):  # valid JSON of the wrong shape
            path = pretrained_root(root) / name / INFO_FILE
            warnings.warn(f"pretrained:{name} left out: {path}: damaged pretrained model info", DdpmlabWarning)
    return "\n".join(blocks) or f"no readable pretrained models in {pretrained_root(root)}"


def model_block(name: str, info: dict) -> str:
    """The lines `pretrained list` shows for one model, from its info.json."""
    training = info.get("training", {})
    classes = f", {info['num_classes']} classes" if info.get("num_classes") else ""
    shape = "×".join(map(str, info.get("image_shape") or []))
    lines = [f"pretrained:{name}  {info.get('method')}{classes}, {shape} images, "
             f"{info.get('parameters', 0):,} parameters, {info.get('weights', {}).get('dtype')} weights",
             f"  trained {training.get('steps')} steps in {fmt_seconds(training.get('wall_s'))} on "
             f"{info.get('machine')}, finished {training.get('finished')}"]
    lines += [f"  {score_summary(score)}" for score in info.get("scores", [])] or ["  no scores recorded"]
    return "\n".join(lines)


def check_name(name: str) -> str:
    """`name` if it is a usable model name (lowercase letters, digits, '-', '_', '.'; not starting with '.'),
    else UserError."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise UserError(f"pretrained NAME {name!r}: use lowercase letters, digits, '.', '_', '-' (e.g. fashion-mnist)")
    return name


def training_devices(run_dir: Path | None) -> list[str]:
    """The devices the run's sessions trained on, from its run.log ("new run: ddpm, device cpu, ...")."""
    try:
        text = (Path(run_dir) / "run.log").read_text() if run_dir is not None else ""
    except OSError:
        return []
    return sorted(set(re.findall(r"(?:new run|resumed at step \d+): \S+, device (\S+),", text)))


def this_machine() -> str:
    """A description of the machine running this: CPU cores and processor, and the GPU if there is one."""
    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    return cpu + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


def score_entry(path: str | Path, step: int, digests: dict[str, str], name: str) -> dict:
    """One element of info.json's "scores" from a `ddpmlab eval` results JSON measured on this checkpoint's EMA
    weights (as shipped, or as the run's float32 before float16 storage): the metrics, their protocol and the
    command that measures them again on the shipped model; UserError for another checkpoint's results."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
        settings, metrics = results["settings"], results["metrics"]
    except FileNotFoundError:
        raise UserError(f"--scores {path}: file not found") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--scores {path}: not a `ddpmlab eval` results JSON") from None
    measured_on = next((kind for kind, digest in digests.items() if settings.get("weights_digest") == digest), None)
    if settings.get("checkpoint_step") != step or settings.get("weights") != "ema" or measured_on is None:
        raise UserError(f"--scores {path}: measured on other weights (step {settings.get('checkpoint_step')}, "
                        f"{settings.get('weights')} weights, digest {settings.get('weights_digest')}) than the EMA "
                        f"weights of step {step}; evaluate this checkpoint (or pretrained:{name}) and pass that file")
    reference = next((info for info in results.get("reference", {}).values()), {})
    asked = [m for m in results.get("metrics_requested", []) if m != "speed"] or ["fd"]
    entry = {"metrics": {k: v for k, v in metrics.items() if not k.startswith(("train_", "sampling_", "peak_"))},
             "protocol": None, "protocols": {}, "measured_on": measured_on, "created": results.get("created")}
    command = f"ddpmlab eval pretrained:{name} --metrics {','.join(asked)}"
    if any(m in FEATURE_METRICS for m in asked):
        entry["protocol"] = {key: settings.get(key) for key in ("n", "sampler", "steps", "spacing", "nfe", "eta",
                                                                 "seed", "guidance", "batch_size", "device_type")}
        entry["protocol"].update(interval_setting(settings.get("guidance_interval")))
        entry["protocol"].update(reference_split=results.get("reference_split"), reference_n=reference.get("count"),
                                 extractors=results.get("extractors", {}))
        command += f" --n {settings['n']}{sampling_flags(settings)} --ref-n {reference.get('count', 10000)}"
    if "nll" in asked:
        nll = results.get("protocols", {}).get("nll") or {**results.get("nll", {}), "seed": settings.get("seed")}
        entry["protocols"]["nll"] = nll
        command += f" --nll-n {nll.get('n')} --nll-timesteps {nll.get('timesteps')}"
    # a stochastic sampler's noise, drawn batch by batch, depends on the batch size
    batch = f" --batch-size {settings['batch_size']}" if settings.get("batch_size") else ""
    entry["command"] = f"{command} --seed {settings['seed']}{batch}"
    return entry


def sampling_flags(settings: dict) -> str:
    """The --sampler/--steps/--spacing (and a guided model's --guidance and --guidance-interval) that draw the samples
    of `settings` again ("" for a one-pass method)."""
    if settings.get("nfe") == 1 and settings.get("steps") is None:
        return ""
    flags = f" --sampler {settings['sampler']} --steps {settings['steps']}"
    if settings.get("spacing") not in (None, default_spacing(settings["sampler"])):
        flags += f" --spacing {settings['spacing']}"
    if settings.get("guidance") is not None:
        flags += f" --guidance {settings['guidance']:g}"
        interval = settings.get("guidance_interval")
        flags += f" --guidance-interval {interval[0]!r},{interval[1]!r}" if interval else " --guidance-interval none"
    return flags


def metrics_rows_until(run_dir: Path | None, step: int) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows with step <= `step`) of the run's metrics.csv, as text; None when there is none."""
    path = Path(run_dir) / "metrics.csv" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return None
        return header, [row for row in reader if row and int(float(row[0])) <= step]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def export_pretrained(source: str | Path, name: str, fp16: bool = False, scores: list[str | Path] = (),
                      root: str | Path | None = None, force: bool = False, machine: str | None = None,
                      command: str | None = None) -> dict:
    """Write pretrained model `name` into the root from `source` (a run directory: its newest checkpoint; or a
    checkpoint folder such as RUN/checkpoints/best): the EMA weights (float16 with `fp16`), the config, info.json
    with `scores` (`ddpmlab eval` results JSONs of these weights) and the run's metrics.csv up to that step.
    Refuses a folder over MAX_BYTES, an existing NAME without `force`, and scores of other weights. Returns info."""
    # Read the checkpoint and the scores of its weights.
    check_name(name)
    folder = find_checkpoint(source)
    run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else None
    progress = ckpt.read_progress(folder)
    step = int(progress["step"])
    state, metadata = ckpt.read_weights(folder / ckpt.EMA_FILE)
    config = config_of(metadata, folder)
    stored = stored_state(state, fp16)
    digests = {"shipped weights": ckpt.weights_digest(as_float32(stored)),
               "the run's float32 EMA weights": ckpt.weights_digest(state)}
    score_entries = [score_entry(path, step, digests, name) for path in scores]
    method = metadata.get("method") or "ddpm"
    if not metadata.get("model_spec"):
        raise UserError(f"{folder}: a checkpoint of a custom backbone (no stored model spec) cannot be rebuilt by "
                        f"ddpmlab, so it cannot ship")
    net = rebuild_method(method, json.loads(metadata["model_spec"]), config)

    # Describe the model.
    root = pretrained_root(root)
    target = root / name
    if target.exists() and not force:
        raise UserError(f"pretrained model {target} exists; pass --force to replace it")
    root.mkdir(parents=True, exist_ok=True)
    num_classes = int(metadata.get("num_classes") or 0)
    finished = datetime.fromtimestamp((folder / ckpt.PROGRESS_FILE).stat().st_mtime, timezone.utc)
    info = {"format": FORMAT, "name": name, "method": method, "image_shape": list(net.image_shape),
            "num_classes": num_classes, "class_names": json.loads(metadata.get("class_names") or "null"),
            "parameters": trained_parameters(net),
            "training": {"steps": step, "wall_s": progress.get("wall_s"), "batch_size": config.train.batch_size,
                         "images_seen": images_seen(config, step), "devices": training_devices(run_dir),
                         "finished": finished.isoformat(timespec="seconds"),
                         "command": command or f"ddpmlab train <this folder>/{CONFIG_FILE}"},
            "machine": machine or this_machine(),
            "weights": {"kind": "EMA", "dtype": "float16" if fp16 else "float32",
                        "digest": digests["shipped weights"], "source": str(folder)},
            "scores": score_entries,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    info["ddpmlab"], info["torch"] = __version__, torch.__version__

    # Write it beside the target, then move it into place.
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    try:
        save_file(stored, str(tmp / WEIGHTS_FILE), metadata={**metadata, "pretrained": name})
        save_config(config, tmp / CONFIG_FILE)
        history = metrics_rows_until(run_dir, step)
        if history is not None:
            with (tmp / METRICS_FILE).open("w", newline="") as handle:
                csv.writer(handle).writerows([history[0], *history[1]])
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        checksums = {path.name: ckpt.file_checksum(path) for path in sorted(tmp.iterdir())}
        (tmp / ckpt.CHECKSUMS_FILE).write_text(json.dumps({"format": ckpt.CHECKSUMS_FORMAT, "files": checksums},
                                                          indent=1) + "\n")
        size = folder_bytes(tmp)
        if size > MAX_BYTES:
            raise UserError(f"pretrained model {name} would take {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:g} MB "
                            f"limit" + ("" if fp16 else "; try --fp16 (half the size)"))
        for path in tmp.iterdir():
            path.chmod(0o644)  # readable by everyone once installed, like the package's other files
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**info, "path": str(target), "bytes": size}


def run(args) -> int:
    """`ddpmlab pretrained list` prints the table; `ddpmlab pretrained export RUN NAME` writes the model."""
    if args.pretrained_command == "list":
        print(pretrained_table())
        return 0
    info = export_pretrained(args.run_dir, args.name, args.fp16, args.scores, force=args.force, machine=args.machine,
                             command=args.train_command)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, {info['weights']['dtype']} EMA weights of step "
          f"{info['training']['steps']}, {len(info['scores'])} score file(s)); use it as pretrained:{args.name}")
    return 0
