"""`ddpmlab eval`: every quality and cost number of a trained run, measured the same way for every model.

Samples are drawn once and kept (RUN_DIR/eval/<name>.npz) so every number can be recomputed; the
reference is the dataset's held-out split ("test", or "val" where there is none) through the same
extractor, cached by reference.py. FD (the classifier's features) and FID (Inception's) are two
separately named numbers, never one in place of the other.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import ddpmlab
from ddpmlab.config import DataConfig
from ddpmlab.diffusion.nll import nll_bits_per_dim
from ddpmlab.errors import UserError
from ddpmlab.eval.cache import dataset_key
from ddpmlab.eval.classifier import check_classifier_fits, classifier_features, held_out_split
from ddpmlab.eval.features import INCEPTION_ID, FeatureExtractor, InceptionFeatures
from ddpmlab.eval.metrics import (PR_NEIGHBOURS, FeatureStats, frechet_distance, kernel_inception_distance,
                                  precision_recall)
from ddpmlab.eval.reference import feature_stats, reference_features, subset_indices
from ddpmlab.eval.speed import sampling_speed, training_cost
from ddpmlab.images import model_to_uint8
from ddpmlab.paths import check_writable_folder
from ddpmlab.methods import DiffusionSampling, sample_images
from ddpmlab.samplers import SAMPLERS, network_evaluations, resolve_spacing, resolve_steps
from ddpmlab.train.build import load_trained, resolve_device
from ddpmlab.train.checkpoint import weights_digest
from ddpmlab.train.distributed import Processes, from_main, gather_to_main, on_main, rank_device
from ddpmlab.train.pretrained import is_pretrained_folder, resolve_source

METRICS = ("fid", "kid", "pr", "fd", "nll", "speed")
REAL_METRICS = ("fd", "fid", "kid", "pr")
INCEPTION_METRICS = ("fid", "kid", "pr")
# TF-Inception runs at about 12 images/s on a 2-core CPU (BENCHMARKS.md), so FID/KID/PR (and NLL's T passes
# per image) are defaults on a GPU only
CPU_DEFAULTS, GPU_DEFAULTS = ("fd", "speed"), METRICS
FEATURE_BATCH = {"classifier": 500, "inception": 50}
DEFAULT_DDIM_STEPS = 50
MIN_FID_SAMPLES = 2048  # the Inception pool3 dimension: fewer samples give a singular covariance


def parse_metrics(text: str | None, device: torch.device, allowed=METRICS) -> list[str]:
    """'fid,fd' -> ['fid', 'fd'] in `allowed` order; None -> the device's defaults; UserError names an unknown one."""
    if text is None:
        defaults = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
        return [m for m in allowed if m in defaults]
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in allowed]
    if unknown or not names:
        raise UserError(f"unknown metric {', '.join(unknown) or repr(text)}; choose from {','.join(allowed)}")
    return [m for m in allowed if m in names]


def check_pr_counts(metrics: list[str], **counts: int) -> None:
    """With "pr" among `metrics`, UserError naming the first count (flag=value, "ref_n" for --ref-n) at or below
    PR_NEIGHBOURS: precision/recall measure each image's distance to its k-th nearest neighbour."""
    if "pr" not in metrics:
        return
    for name, count in counts.items():
        if count <= PR_NEIGHBOURS:
            raise UserError(f"--metrics pr needs --{name.replace('_', '-')} of at least {PR_NEIGHBOURS + 1} (precision "
                            f"and recall look at each image's {PR_NEIGHBOURS}rd nearest neighbour), got {count}")


def fd_between(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two sets of statistics of the same extractor."""
    if a.extractor != b.extractor:
        raise ValueError(f"statistics of different extractors: {a.extractor} vs {b.extractor}")
    return frechet_distance(a.mean(), a.cov(), b.mean(), b.cov())


def inception_scores(metrics: list[str], real: np.ndarray, fake: np.ndarray, device: torch.device) -> dict:
    """FID, KID (mean, std over subsets) and precision/recall of Inception features, as requested."""
    scores = {}
    if "fid" in metrics:
        scores["fid_inception"] = fd_between(feature_stats(real, INCEPTION_ID), feature_stats(fake, INCEPTION_ID))
    if "kid" in metrics:
        scores["kid_inception"], scores["kid_inception_std"] = kernel_inception_distance(real, fake)
    if "pr" in metrics:
        # k-NN radii depend on the set size, so both sets are cut to the same size
        size = min(len(real), len(fake))
        if size <= PR_NEIGHBOURS:
            raise UserError(f"precision/recall need more than {PR_NEIGHBOURS} images on each side (each image's "
                            f"{PR_NEIGHBOURS}rd nearest neighbour), got {len(fake)} samples, {len(real)} real images")
        scores["precision_inception"], scores["recall_inception"] = precision_recall(real[:size], fake[:size],
                                                                                     device=device)
        scores["pr_n"] = size
    return scores


def needed_extractors(metrics: list[str], data_cfg: DataConfig, channels: int, image_size: int,
                      classifier: str | Path | None, device: torch.device) -> tuple[dict, dict]:
    """({"classifier"|"inception": FeatureExtractor}, classifier facts), loaded before any long work so that a
    missing classifier or Inception file fails at once."""
    extractors, facts = {}, {}
    if "fd" in metrics:
        extractors["classifier"], facts = classifier_features(classifier or data_cfg, device)
        check_classifier_fits(facts, data_cfg, channels, image_size)
    if any(m in INCEPTION_METRICS for m in metrics):
        extractors["inception"] = InceptionFeatures(device=device)
    return extractors, facts


def distance_scores(metrics: list[str], extractors: dict[str, FeatureExtractor], real: dict, fake: dict,
                    device: torch.device) -> dict:
    """The requested distances between real and fake features ({extractor kind: N×D features})."""
    scores = {}
    if "classifier" in extractors:
        extractor_id = extractors["classifier"].extractor_id
        scores["fd_classifier"] = fd_between(feature_stats(real["classifier"], extractor_id),
                                             feature_stats(fake["classifier"], extractor_id))
    if "inception" in extractors:
        scores.update(inception_scores(metrics, real["inception"], fake["inception"], device))
    return scores


def class_conditional_scores(extractor, images: torch.Tensor, labels: torch.Tensor, fake: np.ndarray,
                             real: np.ndarray, real_labels: torch.Tensor) -> dict:
    """For a conditional model: how often the dataset classifier recognises the requested class in the samples
    (`class_accuracy`), and the mean over classes of the FD between samples and real images of that class
    (`fd_classifier_per_class`; classes with fewer than 2 images on either side are skipped)."""
    predicted = extractor.predict(images)
    distances = []
    for c in labels.unique().tolist():
        fake_c, real_c = fake[(labels == c).numpy()], real[(real_labels == c).numpy()]
        if len(fake_c) >= 2 and len(real_c) >= 2:
            distances.append(fd_between(feature_stats(real_c, extractor.extractor_id),
                                        feature_stats(fake_c, extractor.extractor_id)))
    return {"class_accuracy": float((predicted == labels).float().mean()),
            "fd_classifier_per_class": float(np.mean(distances)) if distances else None}


def extractor_ids(extractors: dict[str, FeatureExtractor], scores: dict) -> dict:
    """{metric key: id of the extractor behind it}, e.g. {"fd_classifier": "classifier-...", "fid_inception": ...}."""
    kinds = {"classifier": "_classifier", "inception": "_inception"}
    return {key: extractors[kind].extractor_id for key in scores for kind, suffix in kinds.items()
            if key.endswith(suffix) and kind in extractors}


# -- samples ----------------------------------------------------------------------------------------
def class_labels(n: int, num_classes: int | None) -> torch.Tensor | None:
    """Balanced labels 0, 1, ..., num_classes − 1, 0, ... for a conditional model; None otherwise."""
    return torch.arange(n) % num_classes if num_classes else None


def generate_samples(model, schedule, n: int, method: str, steps: int, eta: float, batch_size: int, seed: int,
                     guidance: float | None, clip_denoised: bool, progress: bool = True,
                     labels: torch.Tensor | None = None, prediction: str | None = None,
                     noise: torch.Tensor | None = None, spacing: str | None = None,
                     processes: Processes | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(uint8 n×C×H×W images on the CPU, labels or None) sampled in batches from one seeded generator, by
    ddpmlab.methods.sample_images from a network of `load_trained`.

    A diffusion model (`schedule` given) runs sampler `method` with `steps`, `eta`, `guidance`, `clip_denoised`
    and `prediction` (default: the run's diffusion.prediction, which the network carries); a conditional one gets
    `labels` (default: the classes in turn). A single-pass network (VAE, GAN; `schedule` None) decodes latents
    and reads none of these. `noise` (n×C×H×W) fixes every x_T of a
    diffusion model, the generator then drawing only the samplers' later noise; `spacing` picks the sampler's
    timesteps (None: its default).

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
    sampling = None if model.SINGLE_PASS else DiffusionSampling(method, steps, eta, guidance, clip_denoised, prediction,
                                                                spacing)
    shares = []  # this process's rows of each batch
    for start in tqdm(range(0, n, batch_size), desc=f"sampling {method}{steps or ''}",
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


def safe_name(name: str) -> str:
    """`name` with every run of characters other than letters, digits, . _ - replaced by '-' (no folders, no
    leading dots); UserError when nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not cleaned:
        raise UserError(f"--name {name!r} has no letters or digits")
    return cleaned


def run_of(path: Path) -> Path:
    """The run directory of a run directory or of one of its checkpoint folders (RUN/checkpoints/step_X); a
    pretrained model's folder for `pretrained:NAME` or that folder."""
    from ddpmlab.train import checkpoint as ckpt

    path = resolve_source(path)
    if not path.is_dir():
        raise UserError(f"no such run directory or checkpoint folder: {path}")
    if (path / ckpt.PROGRESS_FILE).is_file():
        if path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").is_file():
            raise UserError(f"{path}: a checkpoint outside a run directory; give its run directory, or --out for results")
        return path.parent.parent
    return path


def eval_folder(run_dir: Path) -> Path:
    """Where evaluation results go without --out: RUN_DIR/eval; for a pretrained model, whose folder is part of the
    installed package and never written to, eval/pretrained-NAME in the current directory."""
    return Path("eval") / f"pretrained-{run_dir.name}" if is_pretrained_folder(run_dir) else run_dir / "eval"


def default_name(method: str, steps: int | None, n: int, seed: int, use_ema: bool, spacing: str | None = None) -> str:
    """e.g. "ddim50-n10000-seed0", "vae-n10000-seed0" for a single-pass method (+ "-trailing" for a spacing other than the sampler's default, "-raw" for the
    non-EMA weights)."""
    from ddpmlab.samplers import DEFAULT_SPACINGS

    extra = f"-{spacing}" if spacing not in (None, DEFAULT_SPACINGS.get(method)) else ""
    return f"{method}{'' if steps is None else steps}{extra}-n{n}-seed{seed}" + ("" if use_ema else "-raw")


# -- the two evaluations ------------------------------------------------------------------------------
def evaluate_run(run_dir: str | Path, metrics: str | None = None, n: int = 10000, sampler: str = "ddim",
                 steps: int | None = None, eta: float = 0.0, batch_size: int | None = None, seed: int = 0,
                 use_ema: bool = True, device: str = "auto", name: str | None = None,
                 classifier: str | Path | None = None, ref_n: int = 10000, nll_n: int = 1000,
                 nll_timesteps: int | None = None, speed_repeats: int = 3, progress: bool = True,
                 out: str | Path | None = None, spacing: str | None = None,
                 processes: Processes | None = None) -> dict | None:
    """Evaluate a run's newest checkpoint (or the checkpoint folder given); writes <name>.json and the .npz samples
    into RUN_DIR/eval (or `out`) and returns the results dict. `name` is sanitised to letters, digits, . _ -.

    metrics: comma-separated subset of METRICS (default: CPU_DEFAULTS on a CPU, all on a GPU). FD/FID/KID/PR
    compare `n` samples with min(ref_n, split size) held-out images; NLL is the bound in bits/dim on min(nll_n, …)
    held-out images; speed times `speed_repeats` batches of min(batch_size, n) on the warm model and reads training
    cost from metrics.csv. UserError for a missing run, unknown metric, absent extractor or n < 2.
    A single-pass run (VAE, GAN) is sampled in one pass (sampler, steps and eta do not apply: the CLI refuses them)
    and has no NLL: asking for nll is a UserError, and a GPU's default metrics leave it out.
    With `processes` of several (torchrun), they share the sampling (generate_samples) and rank 0 alone does the
    rest and returns the results; the other ranks return None.
    """
    processes = processes or Processes()
    device = rank_device(resolve_device(device), processes)
    requested, metrics = metrics, parse_metrics(metrics, device)
    if n < 2 or ref_n < 2 or nll_n < 1:
        raise UserError("--n and --ref-n must be at least 2 (a covariance needs two images), --nll-n at least 1")
    check_pr_counts(metrics, n=n, ref_n=ref_n)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if (batch_size is not None and batch_size <= 0) or speed_repeats <= 0:
        raise UserError("--batch-size and --speed-repeats must be positive")
    source = resolve_source(run_dir)
    run_dir = run_of(source)
    out_dir = Path(out) if out is not None else eval_folder(run_dir)
    check_writable_folder(out_dir, "--out")
    model, schedule, config, step = load_trained(source, use_ema=use_ema, device=str(device))
    if model.SINGLE_PASS:
        if "nll" in metrics and requested is not None:
            raise UserError(f"the nll metric is the diffusion models' variational bound; a {config.method} run has "
                            f"none: leave nll out of --metrics")
        metrics = [m for m in metrics if m != "nll"]
        sampler, steps, eta = config.method, None, None  # one pass: the name and settings say so
    if n < MIN_FID_SAMPLES and any(m in INCEPTION_METRICS for m in metrics) and processes.is_main:
        print(f"warning: FID/KID/PR on {n} samples: below {MIN_FID_SAMPLES} (the Inception feature dimension) the "
              f"covariance is singular and FID is biased high; use --n 10000 for numbers comparable with papers",
              file=sys.stderr)
    if not model.SINGLE_PASS:
        if steps is None:  # ddim at 50 steps, the same for every run; the others at their own defaults (T for ddpm)
            steps = min(DEFAULT_DDIM_STEPS, schedule.T) if sampler == "ddim" else None
        steps = resolve_steps(sampler, steps, schedule.T)
        spacing = resolve_spacing(sampler, spacing)
    channels, image_size = model.image_shape[:2]
    extractors, classifier_facts = on_main(lambda: needed_extractors(metrics, config.data, channels, image_size,
                                                                     classifier, device), processes) or ({}, {})
    batch_size = batch_size or config.sample.batch_size
    name = safe_name(name) if name else default_name(sampler, steps, n, seed, use_ema, spacing) + (
        f"-step{step}" if source != run_dir else "")
    split = held_out_split(config.data)
    guidance = config.sample.guidance if model.num_classes else None
    settings = {"checkpoint_step": step, "weights": "ema" if use_ema else "raw",
                "weights_digest": weights_digest(model.state_dict()), "sampler": sampler, "steps": steps, "spacing": spacing,
                "nfe": 1 if model.SINGLE_PASS else network_evaluations(sampler, steps, schedule.T),
                "eta": eta if sampler == "ddim" else None, "n": n, "batch_size": batch_size, "seed": seed,
                "guidance": guidance, "clip_denoised": None if model.SINGLE_PASS else config.sample.clip_denoised,
                "device_type": device.type}
    results = {"run_dir": str(run_dir), "name": name, "dataset": dataset_key(config.data), "reference_split": split,
               "metrics_requested": metrics, "settings": settings, "metrics": {}, "extractors": {}, "timings_s": {},
               "device": str(device), "ddpmlab": ddpmlab.__version__, "torch": torch.__version__,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    if any(m in REAL_METRICS for m in metrics):  # the metrics of extractors' features of samples
        samples_path = out_dir / f"{name}.npz"
        images = load_samples(samples_path, settings) if processes.is_main else None
        results["samples"] = {"path": str(samples_path), "reused": from_main(images is not None, processes)}
        if not results["samples"]["reused"]:
            start = time.perf_counter()
            generated = generate_samples(model, schedule, n, sampler, steps, eta, batch_size, seed, guidance,
                                         config.sample.clip_denoised, progress, prediction=config.diffusion.prediction,
                                         spacing=spacing, processes=processes)
            results["timings_s"]["sampling"] = time.perf_counter() - start
            if generated is not None:  # rank 0: every process's share
                images, labels = generated
                save_samples(samples_path, images, labels, settings)
    if not processes.is_main:
        return None  # the other processes only drew their shares of the samples

    if extractors:
        real, fake, references = {}, {}, {}
        for kind, extractor in extractors.items():
            start = time.perf_counter()
            real[kind], _, references[extractor.extractor_id] = reference_features(
                config.data, split, extractor, ref_n, FEATURE_BATCH[kind], progress)
            fake[kind] = extractor.extract(images, batch_size=FEATURE_BATCH[kind], progress=progress)
            results["timings_s"][f"features_{kind}"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = distance_scores(metrics, extractors, real, fake, device)
        results["timings_s"]["distances"] = time.perf_counter() - start
        if model.num_classes and "classifier" in extractors:
            from ddpmlab.data import load_dataset

            held_out = load_dataset(config.data, split)
            real_labels = held_out.labels[subset_indices(len(held_out), ref_n)]
            scores.update(class_conditional_scores(extractors["classifier"], images, class_labels(n, model.num_classes),
                                                   fake["classifier"], real["classifier"], real_labels))
        results["metrics"].update(scores)
        results["extractors"] = extractor_ids(extractors, scores)
        results["reference"] = references
        if classifier_facts:
            results["classifier"] = {k: classifier_facts[k] for k in ("path", "extractor_id", "test_accuracy", "test_split")}

    if "nll" in metrics:
        from ddpmlab.data import load_dataset

        held_out = load_dataset(config.data, split)
        index = subset_indices(len(held_out), nll_n)
        labels = held_out.labels[index] if model.num_classes and held_out.labels is not None else None
        start = time.perf_counter()
        mean, standard_error = nll_bits_per_dim(model, schedule, held_out.images[index], labels, batch_size=batch_size,
                                                timesteps=nll_timesteps, generator=torch.Generator().manual_seed(seed),
                                                progress=progress, prediction=config.diffusion.prediction)
        results["timings_s"]["nll"] = time.perf_counter() - start
        results["metrics"].update(nll_bits_per_dim=mean, nll_bits_per_dim_se=standard_error)
        results["nll"] = {"n": len(index), "split": split, "timesteps": nll_timesteps or schedule.T}

    if "speed" in metrics:
        speed_batch = min(batch_size, n)  # the batches sampling itself runs: never more than --n images
        labels = class_labels(speed_batch, model.num_classes)
        speed = sampling_speed(model, schedule, (speed_batch, channels, image_size, image_size), sampler, steps,
                               speed_repeats, device, eta=eta, labels=labels,
                               guidance_scale=guidance if labels is not None else None,
                               clip_denoised=config.sample.clip_denoised, prediction=config.diffusion.prediction,
                               spacing=spacing)
        training = training_cost(run_dir, config.train.batch_size)
        results["speed"], results["training"] = speed, training
        results["metrics"].update(sampling_images_per_s=speed["images_per_s"],
                                  peak_memory_bytes=speed["peak_memory_bytes"],
                                  train_wall_s=training.get("train_wall_s"),
                                  train_images_per_s=training.get("train_images_per_s"))

    path = out_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results = merge_results(path, results)
    path.write_text(json.dumps(results, indent=1) + "\n")
    results["json"] = str(path)
    return results


def merge_results(path: Path, new: dict) -> dict:
    """`new` on top of the results already at `path` when those had the same settings (same weights, same
    samples), so that `--metrics fd` then `--metrics fid` leaves both numbers in one file; else `new` alone."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return new
    if not isinstance(old, dict) or old.get("settings") != new["settings"]:
        return new
    merged = {**old, **new}
    for key in ("metrics", "extractors", "timings_s", "reference"):
        merged[key] = {**old.get(key, {}), **new.get(key, {})}
    merged["metrics_requested"] = [m for m in METRICS if m in set(old.get("metrics_requested", [])) | set(new["metrics_requested"])]
    return merged


def evaluate_real(data_cfg: DataConfig, metrics: str | None = None, n: int = 10000, device: str = "auto",
                  classifier: str | Path | None = None, out: str | Path | None = None, progress: bool = True) -> dict:
    """The floor any model is compared with: distances between min(n, …) train images and the held-out split.

    metrics: subset of REAL_METRICS (default fd on a CPU, fd,fid on a GPU). Writes `out` (JSON) when given.
    """
    device = resolve_device(device)
    metrics = parse_metrics(metrics, device, REAL_METRICS) if metrics is not None else (
        ["fd"] if device.type == "cpu" else ["fd", "fid"])
    if n < 2:
        raise UserError("--n must be at least 2 (a covariance needs two images)")
    check_pr_counts(metrics, n=n)
    from ddpmlab.data import load_dataset

    probe = load_dataset(data_cfg, "train")
    extractors, classifier_facts = needed_extractors(metrics, data_cfg, probe.channels, probe.image_size,
                                                     classifier, device)
    split = held_out_split(data_cfg)
    results = {"dataset": dataset_key(data_cfg), "reference_split": split, "compared_split": "train",
               "metrics_requested": metrics, "metrics": {}, "extractors": {}, "reference": {}, "timings_s": {},
               "device": str(device), "ddpmlab": ddpmlab.__version__,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    real, train = {}, {}
    for kind, extractor in extractors.items():
        start = time.perf_counter()
        real[kind], _, results["reference"][f"{split}:{extractor.extractor_id}"] = reference_features(
            data_cfg, split, extractor, n, FEATURE_BATCH[kind], progress)
        train[kind], _, results["reference"][f"train:{extractor.extractor_id}"] = reference_features(
            data_cfg, "train", extractor, n, FEATURE_BATCH[kind], progress)
        results["timings_s"][f"features_{kind}"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = distance_scores(metrics, extractors, real, train, device)
    results["timings_s"]["distances"] = time.perf_counter() - start
    results["metrics"], results["extractors"] = scores, extractor_ids(extractors, scores)
    if classifier_facts:
        results["classifier"] = {k: classifier_facts[k] for k in ("path", "extractor_id", "test_accuracy", "test_split")}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        results["json"] = str(out)
    return results


# -- the printed table ---------------------------------------------------------------------------------
LABELS = {
    "fd_classifier": "FD (classifier features)", "fid_inception": "FID (Inception)",
    "kid_inception": "KID (Inception)", "kid_inception_std": "  KID std over subsets",
    "precision_inception": "precision (Inception, k=3)", "recall_inception": "recall (Inception, k=3)",
    "pr_n": "  images per set for P/R", "nll_bits_per_dim": "NLL bound (bits/dim)",
    "nll_bits_per_dim_se": "  NLL standard error", "sampling_images_per_s": "sampling (images/s)",
    "peak_memory_bytes": "peak memory (MiB)", "train_wall_s": "training wall-clock (s)",
    "train_images_per_s": "training (images/s, wall-clock)",
    "class_accuracy": "requested class recognised (classifier)", "fd_classifier_per_class": "FD per class, mean",
}


def format_value(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key == "peak_memory_bytes":
        return f"{value / 2**20:.0f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def sample_counts(results: dict) -> dict[str, str]:
    """{metric key: how many images it was measured on}, e.g. "2000 samples vs 10000 test"."""
    counts = {}
    for key, extractor_id in results.get("extractors", {}).items():
        references = {name: info for name, info in results.get("reference", {}).items() if name.endswith(extractor_id)}
        held_out = next((info for name, info in references.items() if not name.startswith("train:")), None)
        compared = (f"{results['settings']['n']} samples" if "settings" in results else
                    f"{references.get('train:' + extractor_id, {}).get('count', '?')} train")
        if held_out is not None:
            counts[key] = f"{compared} vs {held_out['count']} {held_out['split']}"
            if key == "fd_classifier":
                counts["fd_classifier_per_class"] = counts[key] + ", split by class"
                counts["class_accuracy"] = f"{results['settings']['n']} samples" if "settings" in results else ""
    for key in ("kid_inception_std", "pr_n"):
        counts.pop(key, None)
    if "pr_n" in results.get("metrics", {}):
        for key in ("precision_inception", "recall_inception"):
            counts[key] = f"{results['metrics']['pr_n']} vs {results['metrics']['pr_n']}"
    if "nll" in results:
        counts["nll_bits_per_dim"] = f"{results['nll']['n']} {results['nll']['split']} images"
    if "speed" in results:
        speed = results["speed"]
        if "repeats" in speed:
            counts["sampling_images_per_s"] = f"{speed['repeats']} batches of {speed['batch_size']}"
    return counts


def results_table(results: dict) -> str:
    """The metrics of an `evaluate_run`/`evaluate_real` result as an aligned table: metric, value, images used."""
    counts = sample_counts(results)
    rows = [(LABELS.get(key, key), format_value(key, value), counts.get(key, ""))
            for key, value in results["metrics"].items()]
    width = max([len(label) for label, _, _ in rows] + [6])
    value_width = max([len(value) for _, value, _ in rows] + [5])
    lines = [f"{'metric':<{width}}  {'value':<{value_width}}  measured on",
             f"{'-' * width}  {'-' * value_width}  -----------"]
    lines += [f"{label:<{width}}  {value:<{value_width}}  {count}".rstrip() for label, value, count in rows]
    for key, extractor_id in results.get("extractors", {}).items():
        lines.append(f"{key} measured with {extractor_id}")
    if "peak_memory_bytes" in results["metrics"]:
        lines.append(f"peak memory: {results['speed']['peak_memory_kind']}")
    return "\n".join(lines)
