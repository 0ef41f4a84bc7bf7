"""`ddpmlab eval RUN` and `ddpmlab eval real DATASET`: every quality and cost number of a trained run, measured the
same way for every model, and the floor any model is compared with.

Samples are drawn once and kept (RUN_DIR/eval/<name>.npz) so every number can be recomputed; the reference is the
dataset's held-out split ("test", or "val" where there is none) through the same extractor, cached by
eval/reference.py. FD (the classifier's features) and FID (Inception's) are two separately named numbers, never one
in place of the other.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from ddpmlab.commands.sample import check_diffusion_flags, check_guidance
from ddpmlab.commands.sweep import evaluate_sweep
from ddpmlab.config import DataConfig, config_from_dict, parse_overrides
from ddpmlab.data import load_dataset
from ddpmlab.diffusion.nll import nll_bits_per_dim
from ddpmlab.distributed import Processes, current, from_main, on_main, rank_device
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.eval.cache import dataset_key
from ddpmlab.eval.classifier import default_classifier_path, held_out_split, train_classifier_to_file
from ddpmlab.eval.image_sources import model_reference, reference_data
from ddpmlab.eval.reference import reference_features, subset_indices
from ddpmlab.eval.samples import (check_same_weights, class_labels, generate_samples, guidance_and_interval,
                                  interval_setting, load_samples, save_samples)
from ddpmlab.eval.scores import (FEATURE_BATCH, FEATURE_METRICS, INCEPTION_METRICS, METRICS, MIN_FID_SAMPLES,
                                 check_pr_counts, class_conditional_scores, distance_scores, extractor_ids,
                                 needed_extractors, parse_metrics)
from ddpmlab.eval.speed import sampling_speed, training_cost
from ddpmlab.methods import guidable, sampling_nfe
from ddpmlab.paths import check_new_file, check_writable_folder, safe_name
from ddpmlab.report.tables import results_table, sweep_table
from ddpmlab.rng import resolve_device
from ddpmlab.samplers import SAMPLERS, VARIANCES, SamplingSettings, default_spacing
from ddpmlab.store.checkpoint import checkpoint_name, weights_digest
from ddpmlab.store.load import load_trained
from ddpmlab.store.manifest import record_written
from ddpmlab.store.pretrained import resolve_source
from ddpmlab.store.run_dir import eval_folder, run_of
from ddpmlab.version import __version__


def default_name(step: int, method: str, steps: int | None, n: int, seed: int, use_ema: bool,
                 spacing: str | None = None, variance: str | None = None) -> str:
    """e.g. "step_0000040-ddim50-n10000-seed0", "step_0000040-vae-n10000-seed0" for a single-pass method (+
    "-trailing" for a spacing other than the sampler's default, "-beta" for ddpm's σ² = β, "-raw" for the non-EMA
    weights): the checkpoint's name first, so that results of other weights never take each other's place. Samples at
    another guidance than the run's add eval.samples.guidance_suffix."""
    extra = f"-{spacing}" if spacing not in (None, default_spacing(method)) else ""
    extra += f"-{variance}" if variance not in (None, VARIANCES[0]) else ""
    return (f"{checkpoint_name(step)}-{method}{'' if steps is None else steps}{extra}-n{n}-seed{seed}"
            + ("" if use_ema else "-raw"))


def nll_name(step: int, n: int, timesteps: int, use_ema: bool) -> str:
    """The name of an NLL-only evaluation, which samples nothing: e.g. "step_0000040-nll-n200-t100"."""
    return f"{checkpoint_name(step)}-nll-n{n}-t{timesteps}" + ("" if use_ema else "-raw")


def evaluate_run(run_dir: str | Path, sampling: SamplingSettings | None = None, *, metrics: str | None = None,
                 n: int = 10000, batch_size: int | None = None, seed: int = 0, use_ema: bool = True,
                 device: str = "auto", name: str | None = None, classifier: str | Path | None = None,
                 ref_n: int = 10000, nll_n: int = 1000, nll_timesteps: int | None = None, speed_repeats: int = 3,
                 progress: bool = True, out: str | Path | None = None, processes: Processes | None = None,
                 reference: tuple[str, str] | None = None, guidance: float | None = None,
                 guidance_interval: tuple | None = None) -> dict | None:
    """Evaluate a run's newest checkpoint (or the checkpoint folder given); writes <name>.json and the .npz samples
    into RUN_DIR/eval (or `out`) and returns the results dict. `name` is sanitised to letters, digits, . _ -.

    `sampling` (default: DDIM at samplers.EVALUATION_STEPS, the same for every run; steps None: the sampler's
    evaluation default, SamplingSettings.for_evaluation); `guidance`: the guidance w of a class-conditional model
    (classifier-free) or of a latent DDPM with a set guide (autoguidance), at the noise levels of `guidance_interval`
    (eval.samples.evaluation_interval; default: its sample.guidance and sample.guidance_interval; a UserError
    for any other model). metrics: comma-separated
    names of eval.scores.METRICS (default: the cpu_default ones on a CPU, all on a GPU). FD/FID/KID/PR
    compare `n` samples with min(ref_n, split size) held-out images (or, with `reference` (NAME, SPLIT), images of
    that split: results in <name>-vs-NAME-SPLIT.json beside the same samples); NLL is the bound in bits/dim on
    min(nll_n, …) held-out images of the run's dataset; speed times `speed_repeats` batches of min(batch_size, n) on
    the warm model and reads training cost from metrics.csv. UserError for a missing run, unknown metric, absent
    extractor or n < 2.
    A single-pass run (VAE, GAN) is sampled in one pass (sampler, steps and eta do not apply: the CLI refuses them)
    and has no NLL: asking for nll is a UserError, and a GPU's default metrics leave it out.
    With `processes` of several (torchrun), they share the sampling (generate_samples) and rank 0 alone does the
    rest and returns the results; the other ranks return None.
    """
    # Check the request.
    processes = processes or Processes()
    sampling = sampling or SamplingSettings()
    device = rank_device(resolve_device(device), processes)
    requested, metrics = metrics, parse_metrics(metrics, device)
    if n < 2 or ref_n < 2 or nll_n < 1:
        raise UserError("--n and --ref-n must be at least 2 (a covariance needs two images), --nll-n at least 1")
    check_pr_counts(metrics, n=n, ref_n=ref_n)
    sampler = sampling.sampler
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if (batch_size is not None and batch_size <= 0) or speed_repeats <= 0:
        raise UserError("--batch-size and --speed-repeats must be positive")

    # Load the run.
    source = resolve_source(run_dir)
    run_dir = run_of(source)
    out_dir = Path(out) if out is not None else eval_folder(run_dir)
    check_writable_folder(out_dir, "--out")
    model, schedule, config, step = load_trained(source, use_ema=use_ema, device=str(device))
    guidance, interval, suffix = guidance_and_interval(guidable(model), config.sample, guidance, guidance_interval)
    if model.SINGLE_PASS:
        if "nll" in metrics and requested is not None:
            raise UserError(f"the nll metric is the diffusion models' variational bound; a {config.method} run has "
                            f"none: leave nll out of --metrics")
        metrics = [m for m in metrics if m != "nll"]
        sampling, sampler, steps, spacing, eta, variance = None, config.method, None, None, None, None  # one pass
    else:
        if config.method == "ldm" and "nll" in metrics and requested is not None:
            raise UserError("the nll metric is a bound on the likelihood of pixels; a latent DDPM's (method=ldm) bound "
                            "is on its autoencoder's latents, not on the images: leave nll out of --metrics")
        metrics = [m for m in metrics if not (config.method == "ldm" and m == "nll")]
        sampling = sampling.for_evaluation(schedule.T).with_(
            guidance=guidance, guidance_interval=interval, clip_denoised=config.sample.clip_denoised,
            variance=sampling.variance or config.sample.variance).resolved(schedule.T)
        sampler, steps, spacing, eta = sampling.sampler, sampling.steps, sampling.spacing, sampling.eta
        variance = sampling.variance if sampler == "ddpm" else None
    if n < MIN_FID_SAMPLES and any(m in INCEPTION_METRICS for m in metrics) and processes.is_main:
        warnings.warn(f"FID/KID/PR on {n} samples: below {MIN_FID_SAMPLES} (the Inception feature dimension) the "
                      f"covariance is singular and FID is biased high; use --n 10000 for numbers comparable with papers",
                      DdpmlabWarning, stacklevel=2)
    channels, image_size = model.image_shape[:2]
    reference_cfg, split = reference_data(config.data, reference)
    extractors, classifier_facts = on_main(lambda: needed_extractors(metrics, reference_cfg, channels, image_size,
                                                                     classifier, device), processes) or ({}, {})
    batch_size = batch_size or config.sample.batch_size
    nll_only = metrics == ["nll"]  # nothing sampled: neither the name nor the settings carry a sampler
    weights = {"checkpoint_step": step, "weights": "ema" if use_ema else "raw",
               "weights_digest": weights_digest(model.state_dict())}
    if nll_only:
        nll_timesteps = nll_timesteps or schedule.T
        default = nll_name(step, nll_n, nll_timesteps, use_ema)
        settings = {**weights, "nll_n": nll_n, "nll_timesteps": nll_timesteps, "batch_size": batch_size, "seed": seed,
                    "device_type": device.type}
    else:
        default = default_name(step, sampler, steps, n, seed, use_ema, spacing, variance) + suffix
        settings = {**weights, "sampler": sampler, "steps": steps, "spacing": spacing,
                    "nfe": 1 if model.SINGLE_PASS else sampling_nfe(model, sampling),
                    "eta": eta if sampler == "ddim" else None, "variance": variance, "n": n, "batch_size": batch_size,
                    "seed": seed, "guidance": guidance, **interval_setting(interval),
                    "clip_denoised": None if model.SINGLE_PASS else config.sample.clip_denoised,
                    "device_type": device.type}
    name = safe_name(name) if name else default
    path = out_dir / (f"{name}.json" if reference is None else f"{name}-vs-{reference[0]}-{reference[1]}.json")
    check_same_weights([path, out_dir / f"{name}.npz"], settings)
    results = {"run_dir": str(run_dir), "name": name, "dataset": dataset_key(reference_cfg), "reference_split": split,
               "metrics_requested": metrics, "settings": settings, "metrics": {}, "protocols": {}, "extractors": {},
               "timings_s": {}, "device": str(device), "ddpmlab": __version__, "torch": torch.__version__,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    # Draw samples (or read the kept ones).
    if any(m in FEATURE_METRICS for m in metrics):
        samples_path = out_dir / f"{name}.npz"
        images = load_samples(samples_path, settings) if processes.is_main else None
        results["samples"] = {"path": str(samples_path), "reused": from_main(images is not None, processes)}
        if not results["samples"]["reused"]:
            start = time.perf_counter()
            generated = generate_samples(model, n, sampling, batch_size=batch_size, seed=seed, progress=progress,
                                         processes=processes)
            results["timings_s"]["sampling"] = time.perf_counter() - start
            if generated is not None:  # rank 0: every process's share
                images, labels = generated
                record_written(run_dir, samples_path)
                save_samples(samples_path, images, labels, settings)
    if not processes.is_main:
        return None  # the other processes only drew their shares of the samples

    # Score.
    if extractors:
        real, fake, references = {}, {}, {}
        for kind, extractor in extractors.items():
            start = time.perf_counter()
            real[kind], _, references[extractor.extractor_id] = reference_features(
                reference_cfg, split, extractor, ref_n, FEATURE_BATCH[kind], progress)
            fake[kind] = extractor.extract(images, batch_size=FEATURE_BATCH[kind], progress=progress)
            results["timings_s"][f"features_{kind}"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = distance_scores(metrics, extractors, real, fake, device)
        results["timings_s"]["distances"] = time.perf_counter() - start
        held_out = load_dataset(reference_cfg, split) if model.num_classes and "classifier" in extractors else None
        if held_out is not None and held_out.labels is not None and reference_cfg.name == config.data.name:
            real_labels = held_out.labels[subset_indices(len(held_out), ref_n)]
            scores.update(class_conditional_scores(extractors["classifier"], images, class_labels(n, model.num_classes),
                                                   fake["classifier"], real["classifier"], real_labels))
        results["metrics"].update(scores)
        results["extractors"] = extractor_ids(extractors, scores)
        results["reference"] = references
        named = dataset_key(reference_cfg) if reference else None  # a --reference is named in every protocol
        results["protocols"].update({m: sampling_protocol(settings, split, references[extractors[
            METRICS[m].extractor].extractor_id]["count"], named) for m in metrics if m in FEATURE_METRICS})
        if classifier_facts:
            results["classifier"] = {k: classifier_facts[k] for k in ("path", "extractor_id", "test_accuracy", "test_split")}

    if "nll" in metrics:
        held_out = load_dataset(config.data, held_out_split(config.data))
        index = subset_indices(len(held_out), nll_n)
        labels = held_out.labels[index] if model.num_classes and held_out.labels is not None else None
        start = time.perf_counter()
        mean, standard_error = nll_bits_per_dim(model, schedule, held_out.images[index], labels, batch_size=batch_size,
                                                timesteps=nll_timesteps, generator=torch.Generator().manual_seed(seed),
                                                progress=progress, prediction=config.diffusion.prediction)
        results["timings_s"]["nll"] = time.perf_counter() - start
        results["metrics"].update(nll_bits_per_dim=mean, nll_bits_per_dim_se=standard_error)
        results["nll"] = {"n": len(index), "split": held_out_split(config.data),
                          "timesteps": nll_timesteps or schedule.T}
        results["protocols"]["nll"] = {**results["nll"], "seed": seed}

    if "speed" in metrics:
        speed_batch = min(batch_size, n)  # the batches sampling itself runs: never more than --n images
        labels = class_labels(speed_batch, model.num_classes)
        speed = sampling_speed(model, schedule, (speed_batch, channels, image_size, image_size), sampling,
                               repeats=speed_repeats, device=device, labels=labels)
        training = training_cost(run_dir, config)
        results["speed"], results["training"] = speed, training
        results["protocols"]["speed"] = {"sampler": speed["sampler"], "steps": speed["steps"], "nfe": speed["nfe"],
                                         "batch_size": speed_batch, "repeats": speed_repeats}
        results["metrics"].update(sampling_images_per_s=speed["images_per_s"],
                                  peak_memory_bytes=speed["peak_memory_bytes"],
                                  train_wall_s=training.get("train_wall_s"),
                                  train_images_per_s=training.get("train_images_per_s"))

    # Write the results.
    path.parent.mkdir(parents=True, exist_ok=True)
    record_written(run_dir, path)
    results = merge_results(path, results)
    path.write_text(json.dumps(results, indent=1) + "\n")
    results["json"] = str(path)
    return results


def sampling_protocol(settings: dict, split: str, reference_n: int, dataset: str | None = None) -> dict:
    """What a metric of samples was measured on: the samples (how many, drawn how, from which seed) against
    `reference_n` images of the held-out `split` (of `dataset` when a --reference named it)."""
    return {**{key: settings[key] for key in ("n", "sampler", "steps", "spacing", "nfe", "eta", "seed", "guidance")},
            **interval_setting(settings.get("guidance_interval")),
            **({"reference_dataset": dataset} if dataset else {}), "reference_split": split, "reference_n": reference_n}


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
    for key in ("metrics", "protocols", "extractors", "timings_s", "reference"):
        merged[key] = {**old.get(key, {}), **new.get(key, {})}
    merged["metrics_requested"] = [m for m in METRICS if m in set(old.get("metrics_requested", [])) | set(new["metrics_requested"])]
    return merged


def evaluate_real(data_cfg: DataConfig, metrics: str | None = None, n: int = 10000, device: str = "auto",
                  classifier: str | Path | None = None, out: str | Path | None = None, progress: bool = True) -> dict:
    """The floor any model is compared with: distances between min(n, …) train images and the held-out split.

    metrics: subset of FEATURE_METRICS (default fd on a CPU, fd,fid on a GPU). Writes `out` (JSON) when given.
    """
    device = resolve_device(device)
    metrics = parse_metrics(metrics, device, FEATURE_METRICS) if metrics is not None else (
        ["fd"] if device.type == "cpu" else ["fd", "fid"])
    if n < 2:
        raise UserError("--n must be at least 2 (a covariance needs two images)")
    check_pr_counts(metrics, n=n)
    probe = load_dataset(data_cfg, "train")
    extractors, classifier_facts = needed_extractors(metrics, data_cfg, probe.channels, probe.image_size,
                                                     classifier, device)
    split = held_out_split(data_cfg)
    results = {"dataset": dataset_key(data_cfg), "reference_split": split, "compared_split": "train",
               "metrics_requested": metrics, "metrics": {}, "extractors": {}, "reference": {}, "timings_s": {},
               "device": str(device), "ddpmlab": __version__,
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


def data_config(dataset: str, overrides: list[str]) -> DataConfig:
    """The data section of dataset `dataset` with data.key=value `overrides`; UserError for any other key."""

    data = parse_overrides(overrides)
    if set(data) - {"data"}:
        raise UserError(f"only data.key=value overrides apply here, got {', '.join(sorted(set(data) - {'data'}))}")
    return config_from_dict({"data": {**data.get("data", {}), "name": dataset}}, "override").data


def run_train_classifier(args) -> int:
    """`ddpmlab eval train-classifier DATASET`: the classifier behind FD, saved with its test accuracy."""
    data_cfg = data_config(args.dataset, args.overrides)
    command = " ".join(["ddpmlab", *args.argv])
    out = Path(args.out) if args.out is not None else default_classifier_path(data_cfg)
    for path in (out, out.with_suffix(".json")):  # the weights and their facts
        check_new_file(path, "--out", args.force)
    facts = train_classifier_to_file(data_cfg, out, args.steps, args.batch_size, args.lr, args.seed,
                                     resolve_device(args.device), progress=not args.quiet, command=command)
    print(f"test accuracy {facts['test_accuracy']:.4f} on the {facts['test_split']} split after {facts['steps']} steps "
          f"({facts['train_seconds']:.0f} s); extractor {facts['extractor_id']}; wrote {facts['path']}")
    return 0


def run_real(args) -> int:
    """`ddpmlab eval real DATASET`: the train-vs-held-out distances, the floor any model is compared with."""
    data_cfg = data_config(args.dataset, args.overrides)
    out = args.out or Path("runs") / "real" / f"{dataset_key(data_cfg)}.json"
    check_new_file(Path(out), "--out", args.force)
    results = evaluate_real(data_cfg, args.metrics, args.n, args.device, args.classifier, out, progress=not args.quiet)
    print(results_table(results))
    print(f"wrote {results['json']}")
    return 0


# the flags of one sampling that a sweep's SPEC decides for each of its points
SWEEP_DECIDES = (("sampler", "--sampler"), ("steps", "--steps"), ("spacing", "--spacing"), ("eta", "--eta"))


def flags_given(args, *names: str) -> dict:
    """{name: value} of the flags among `names` given on the command line (the parser leaves the others None, so that
    the functions' own defaults apply)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def run(args) -> int:
    """`ddpmlab eval RUN`, or with --sweep the sampler sweep; with --reference NAME:SPLIT, scored against that split."""
    if args.reference is None and Path(args.run_dir).suffix.lower() == ".npz":
        raise UserError(f"{args.run_dir} holds images, not a model: score them with --reference REF")
    check_diffusion_flags(args, args.run_dir)
    check_guidance(args.guidance)
    reference = model_reference(args.reference)
    if args.force:
        raise UserError("--force applies to scoring images (ddpmlab eval SAMPLES --reference REF); a model's results "
                        "of other weights are never replaced: give another --name or --out")
    counts = flags_given(args, "n", "ref_n", "seed")
    if args.sweep:
        if reference is not None:
            raise UserError("--sweep scores every point against the run's held-out split; drop --reference or --sweep")
        given = [flag for name, flag in SWEEP_DECIDES if getattr(args, name) is not None]
        if given:
            raise UserError(f"--sweep names each point's sampler and steps; {given[0]} does not apply to it: put it in "
                            f"the SPEC (e.g. --sweep ddpm:1000,ddim:20) or drop --sweep")
        if current().world_size > 1:
            raise UserError("ddpmlab eval --sweep runs in one process; start it without torchrun")
        results = evaluate_sweep(args.run_dir, args.sweep, metrics=args.metrics, batch_size=args.batch_size,
                                 use_ema=not args.no_ema, device=args.device, name=args.name,
                                 classifier=args.classifier, progress=not args.quiet, out=args.out,
                                 variance=args.variance, guidance=args.guidance,
                                 guidance_interval=args.guidance_interval, **counts)
        print(sweep_table(results))
        print(f"wrote {results['json']} and {results['plot']}")
        return 0
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError("--eta must be in [0, 1]")
    if args.variance is not None and (args.sampler or "ddim") != "ddpm":
        raise UserError(f"--variance applies to --sampler ddpm only, not {args.sampler or 'ddim'}")
    sampling = SamplingSettings(args.sampler or "ddim", args.steps, args.spacing, eta=args.eta or 0.0,
                                variance=args.variance)
    results = evaluate_run(args.run_dir, sampling, metrics=args.metrics, batch_size=args.batch_size,
                           use_ema=not args.no_ema, device=args.device, name=args.name, classifier=args.classifier,
                           nll_timesteps=args.nll_timesteps, progress=not args.quiet, out=args.out,
                           processes=current(), reference=reference, guidance=args.guidance,
                           guidance_interval=args.guidance_interval, **counts,
                           **flags_given(args, "nll_n", "speed_repeats"))
    if results is None:  # a process other than rank 0: it sampled its share
        return 0
    print(results_table(results))
    print(f"wrote {results['json']}")
    return 0
