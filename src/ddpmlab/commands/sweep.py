"""`ddpmlab eval RUN --sweep SPEC`: quality against cost, every sampler point scored on samples from the same x_T."""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from ddpmlab.errors import DdpmlabNote, DdpmlabWarning, UserError
from ddpmlab.eval.classifier import held_out_split
from ddpmlab.eval.reference import reference_features
from ddpmlab.eval.samples import (check_same_weights, generate_samples, guidance_and_interval, interval_setting,
                                  load_samples, save_samples)
from ddpmlab.eval.scores import (FEATURE_BATCH, INCEPTION_METRICS, MIN_FID_SAMPLES, check_pr_counts, distance_scores,
                                 extractor_ids, needed_extractors, parse_metrics)
from ddpmlab.eval.speed import machine_load
from ddpmlab.eval.sweep import parse_sweep, point_name
from ddpmlab.methods import guidable, sampling_nfe
from ddpmlab.paths import check_writable_folder, safe_name
from ddpmlab.report.plots import plot_sweep
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.checkpoint import checkpoint_name, weights_digest
from ddpmlab.store.load import load_trained
from ddpmlab.store.manifest import record_written
from ddpmlab.store.pretrained import resolve_source
from ddpmlab.store.run_dir import eval_folder, run_of
from ddpmlab.version import __version__


def sweep_name(step: int, n: int, seed: int, use_ema: bool = True) -> str:
    """The default NAME of a sweep's files (sweep-NAME.json, .png, sweep-NAME-POINT.npz): e.g.
    "step_0000040-n1000-seed0", the checkpoint's name first so that sweeps of other weights never replace each other
    (+ eval.samples.guidance_suffix at another guidance than the run's)."""
    return f"{checkpoint_name(step)}-n{n}-seed{seed}" + ("" if use_ema else "-raw")


def point_samples(out_dir: Path, name: str, method: str, steps: int, T: int) -> Path:
    """Where the samples of one sweep point go: OUT/sweep-NAME-POINT.npz."""
    spacing = SamplingSettings(method, steps).resolved(T).spacing
    return Path(out_dir) / f"sweep-{name}-{point_name(method, steps, spacing)}.npz"


def earlier_timings(path: Path, weights: dict) -> dict[str, float]:
    """{samples file name: seconds per 1,000 images} of the points an earlier run of this sweep timed (the sweep JSON
    at `path`, of the same `weights`), so that reusing their samples keeps what was measured."""
    try:
        saved = json.loads(Path(path).read_text())
        if any(saved.get(key) != value for key, value in weights.items()):
            return {}
        return {Path(p["samples"]).name: p["seconds_per_1000"] for p in saved["points"] if p.get("seconds_per_1000") is not None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def evaluate_sweep(run_dir: str | Path, sweep: str, *, metrics: str | None = None, n: int = 10000,
                   batch_size: int | None = None, seed: int = 0, use_ema: bool = True, device: str = "auto",
                   name: str | None = None, classifier: str | Path | None = None, ref_n: int = 10000,
                   progress: bool = True, out: str | Path | None = None, variance: str | None = None,
                   guidance: float | None = None, guidance_interval: tuple | None = None) -> dict:
    """Score every point of `sweep` on `n` samples from the same x_T; returns (and writes) the results dict. ddpm's
    points use `variance` (default: the run's sample.variance), a guidable model's `guidance` (methods.guidable;
    default: its sample.guidance) at the noise levels of `guidance_interval` (default: its
    sample.guidance_interval)."""
    # Check the request.
    device = resolve_device(device)
    metrics = parse_metrics(metrics or ("fd" if device.type == "cpu" else "fd,fid"), device)
    distance_metrics = [m for m in metrics if m in ("fd", *INCEPTION_METRICS)]
    if not distance_metrics or len(distance_metrics) != len(metrics):
        raise UserError("--sweep measures fd, fid, kid and pr (speed is measured for every point anyway)")
    if n < 2 or ref_n < 2:
        raise UserError("--n and --ref-n must be at least 2")
    check_pr_counts(metrics, n=n, ref_n=ref_n)

    # Load the run.
    source = resolve_source(run_dir)
    run_dir = run_of(source)
    out_dir = Path(out) if out is not None else eval_folder(run_dir)
    check_writable_folder(out_dir, "--out")
    model, schedule, config, step = load_trained(source, use_ema=use_ema, device=str(device))
    points = parse_sweep(sweep, schedule.T)
    if n < MIN_FID_SAMPLES and any(m in INCEPTION_METRICS for m in metrics):
        warnings.warn(f"FID/KID/PR on {n} samples per point: below {MIN_FID_SAMPLES}, biased high", DdpmlabWarning,
                      stacklevel=2)
    channels, image_size = model.image_shape[:2]
    extractors, classifier_facts = needed_extractors(metrics, config.data, channels, image_size, classifier, device)
    batch_size = batch_size or config.sample.batch_size
    guidance, interval, suffix = guidance_and_interval(guidable(model), config.sample, guidance, guidance_interval)
    name = safe_name(name) if name else sweep_name(step, n, seed, use_ema) + suffix
    weights = {"checkpoint_step": step, "weights": "ema" if use_ema else "raw",
               "weights_digest": weights_digest(model.state_dict())}
    json_path = out_dir / f"sweep-{name}.json"
    check_same_weights([json_path, *(point_samples(out_dir, name, method, steps, schedule.T)
                                     for method, steps in points)], weights)
    earlier = earlier_timings(json_path, weights)

    # Read the reference features.
    split = held_out_split(config.data)
    real, references = {}, {}
    for kind, extractor in extractors.items():
        real[kind], _, references[extractor.extractor_id] = reference_features(
            config.data, split, extractor, ref_n, FEATURE_BATCH[kind], progress)

    # Draw and score every point: the same x_T for each; stochastic samplers draw their later noise from a second
    # generator.
    noise = torch.randn((n, *model.noise_shape), generator=torch.Generator().manual_seed(seed))  # latents for an LDM
    results = {"run_dir": str(run_dir), "name": name, **weights, "n": n, "seed": seed, "batch_size": batch_size,
               "guidance": guidance, **interval_setting(interval), "reference_split": split,
               "reference": references, "device": str(device), "ddpmlab": __version__,
               "torch": torch.__version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "points": []}
    for method, steps in points:
        sampling = SamplingSettings(method, steps, guidance=guidance, clip_denoised=config.sample.clip_denoised,
                                    variance=variance or config.sample.variance, guidance_interval=interval)
        sampling = sampling.resolved(schedule.T)
        spacing = sampling.spacing
        settings = {"checkpoint_step": step, "weights": results["weights"], "weights_digest": results["weights_digest"],
                    "sampler": method, "steps": steps,
                    "spacing": spacing, "eta": 0.0 if method == "ddim" else None,
                    "variance": sampling.variance if method == "ddpm" else None, "n": n, "batch_size": batch_size,
                    "seed": seed, "noise": "shared-x_T", "guidance": guidance, **interval_setting(interval),
                    "clip_denoised": config.sample.clip_denoised}
        samples_path = point_samples(out_dir, name, method, steps, schedule.T)
        start = time.perf_counter()
        images = load_samples(samples_path, settings)
        reused = images is not None
        if images is None:
            images, labels = generate_samples(model, n, sampling, batch_size=batch_size, seed=seed + 1, noise=noise,
                                              progress=progress)
            record_written(run_dir, samples_path)
            save_samples(samples_path, images, labels, settings)
        seconds = time.perf_counter() - start
        # reused samples: the timing measured when they were drawn, None when it is not known
        seconds_per_1000 = earlier.get(samples_path.name) if reused else 1000 * seconds / n
        fake = {kind: extractor.extract(images, batch_size=FEATURE_BATCH[kind], progress=False)
                for kind, extractor in extractors.items()}
        scores = distance_scores(metrics, extractors, real, fake, device)
        results["points"].append({"sampler": method, "steps": steps, "spacing": spacing,
                                  "nfe": sampling_nfe(model, sampling),
                                  "seconds_per_1000": seconds_per_1000,
                                  "timed": "now" if not reused else "earlier" if seconds_per_1000 is not None else None,
                                  "samples": str(samples_path), "metrics": scores})
        results["extractors"] = extractor_ids(extractors, scores)
    untimed = [p for p in results["points"] if p["seconds_per_1000"] is None]
    if untimed:
        warnings.warn(f"{len(untimed)} point(s) reused saved samples, whose timing was not kept; delete "
                      f"{out_dir}/sweep-{name}-*.npz to time them", DdpmlabNote, stacklevel=2)

    # Write the results and the plot.
    results["metric_keys"] = list(results["points"][0]["metrics"])
    results["machine"] = machine_load()
    if classifier_facts:
        results["classifier"] = {k: classifier_facts[k] for k in ("path", "extractor_id", "test_accuracy", "test_split")}
    out_dir.mkdir(parents=True, exist_ok=True)
    record_written(run_dir, json_path, out_dir / f"sweep-{name}.png")
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    metric = results["metric_keys"][0]
    plot = plot_sweep(results["points"], metric, out_dir / f"sweep-{name}.png",
                      f"{run_dir.name} step {step}: {metric} on {n} samples vs {references[next(iter(references))]['count']} "
                      f"{split} images, same x_T for every point")
    results["json"], results["plot"] = str(json_path), str(plot)
    return results
