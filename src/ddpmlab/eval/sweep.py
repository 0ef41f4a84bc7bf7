"""Quality against sampling cost: one trained model, several samplers and step counts, the same x_T for all.

`ddpmlab eval RUN_DIR --sweep ddpm:1000,ddim:10,20,50,dpm-solver++:10,20,heun:10` samples `--n` images per
point from the same initial noise, scores each set against the same cached reference features, times each
point (seconds per 1,000 images) and writes RUN_DIR/eval/sweep-<name>.json, a .png plot of quality against
network evaluations and against seconds, and each point's samples as .npz.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import ddpmlab
from ddpmlab.errors import UserError
from ddpmlab.samplers import SAMPLERS, network_evaluations, resolve_spacing, resolve_steps

SWEEP_EXAMPLE = "ddpm:1000,ddim:10,20,50,dpm-solver++:10,20,heun:10"


def parse_sweep(text: str, T: int) -> list[tuple[str, int]]:
    """'ddim:10,20,heun:9' -> [("ddim", 10), ("ddim", 20), ("heun", 9)]: a `sampler:` starts a group, bare numbers
    add step counts to the group before them. UserError names the bad token."""
    points, method = [], None
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if ":" in token:
            method, _, token = token.partition(":")
            method = method.strip()
            if method not in SAMPLERS:
                raise UserError(f"--sweep: unknown sampler {method!r}; samplers: {', '.join(SAMPLERS)}")
        if method is None:
            raise UserError(f"--sweep must start with a sampler, e.g. {SWEEP_EXAMPLE}")
        try:
            steps = int(token)
        except ValueError:
            raise UserError(f"--sweep: {token!r} is not a step count (e.g. {SWEEP_EXAMPLE})") from None
        points.append((method, resolve_steps(method, steps, T)))
    if not points:
        raise UserError(f"--sweep names no points, e.g. {SWEEP_EXAMPLE}")
    return list(dict.fromkeys(points))


def point_name(method: str, steps: int, spacing: str) -> str:
    """e.g. "dpm-solver++20-time-quadratic"."""
    return f"{method}{steps}-{spacing}"


def ddpm_reference(points: list[dict], metric: str) -> dict | None:
    """The level the fast samplers are measured against: the sweep's longest `ddpm` chain scored on `metric`."""
    ddpm = [p for p in points if p["sampler"] == "ddpm" and p["metrics"].get(metric) is not None]
    return max(ddpm, key=lambda p: p["nfe"]) if ddpm else None


def plot_sweep(points: list[dict], metric: str, path: Path, title: str) -> Path:
    """Two panels: `metric` against network evaluations (log scale) and against seconds per 1,000 images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for method in dict.fromkeys(p["sampler"] for p in points):
        rows = sorted((p for p in points if p["sampler"] == method and p["metrics"].get(metric) is not None),
                      key=lambda p: p["nfe"])
        if not rows:
            continue
        values = [p["metrics"][metric] for p in rows]
        axes[0].plot([p["nfe"] for p in rows], values, "o-", label=method)
        timed = [p for p in rows if p["seconds_per_1000"] is not None]
        axes[1].plot([p["seconds_per_1000"] for p in timed], [p["metrics"][metric] for p in timed], "o-", label=method)
        for p, value in zip(rows, values):
            axes[0].annotate(str(p["nfe"]), (p["nfe"], value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    reference = ddpm_reference(points, metric)
    if reference is not None:
        for ax in axes:
            ax.axhline(reference["metrics"][metric], color="0.5", ls=":", lw=1, label=f"ddpm {reference['nfe']} level")
    axes[0].set(xscale="log", xlabel="network evaluations (NFE)", ylabel=metric)
    axes[1].set(xscale="log", xlabel="seconds per 1,000 images", ylabel=metric)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def relative_change(value: float | None, reference: float) -> str:
    """(value − reference)/reference as a signed percentage, e.g. "+30.4 %"; "n/a" without a value or reference."""
    if value is None or reference == 0:
        return "n/a"
    return f"{100 * (value - reference) / reference:+.1f} %"


def sweep_table(results: dict) -> str:
    """The sweep as aligned text: sampler, steps, NFE, each metric, the first metric relative to the longest ddpm
    chain when the sweep has one, seconds per 1,000 images."""
    metrics = [m for m in results["metric_keys"]]
    reference = ddpm_reference(results["points"], metrics[0])

    def against_reference(p: dict) -> list[str]:
        if reference is None:
            return []
        return ["(reference)" if p is reference else relative_change(p["metrics"].get(metrics[0]),
                                                                     reference["metrics"][metrics[0]])]

    header = ["sampler", "spacing", "steps", "NFE", *metrics,
              *([f"vs ddpm {reference['nfe']}"] if reference is not None else []), "s/1000 img"]
    rows = [[p["sampler"], p["spacing"], str(p["steps"]), str(p["nfe"]),
             *[f"{p['metrics'][m]:.4g}" if p["metrics"].get(m) is not None else "n/a" for m in metrics],
             *against_reference(p),
             f"{p['seconds_per_1000']:.1f}" if p["seconds_per_1000"] is not None else "reused"]
            for p in results["points"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluate_sweep(run_dir: str | Path, sweep: str, metrics: str | None = None, n: int = 1000,
                   batch_size: int | None = None, seed: int = 0, use_ema: bool = True, device: str = "auto",
                   name: str | None = None, classifier: str | Path | None = None, ref_n: int = 10000,
                   progress: bool = True, out: str | Path | None = None) -> dict:
    """Score every point of `sweep` on `n` samples from the same x_T; returns (and writes) the results dict."""
    from ddpmlab.eval.reference import reference_features
    from ddpmlab.eval.run import (FEATURE_BATCH, INCEPTION_METRICS, MIN_FID_SAMPLES, check_pr_counts,
                                  distance_scores, eval_folder, extractor_ids, generate_samples, load_samples,
                                  needed_extractors, parse_metrics, run_of, safe_name, save_samples)
    from ddpmlab.eval.classifier import held_out_split
    from ddpmlab.eval.speed import machine_load
    from ddpmlab.paths import check_writable_folder
    from ddpmlab.train.build import load_trained, resolve_device
    from ddpmlab.train.checkpoint import weights_digest
    from ddpmlab.train.pretrained import resolve_source

    device = resolve_device(device)
    metrics = parse_metrics(metrics or ("fd" if device.type == "cpu" else "fd,fid"), device)
    distance_metrics = [m for m in metrics if m in ("fd", *INCEPTION_METRICS)]
    if not distance_metrics or len(distance_metrics) != len(metrics):
        raise UserError("--sweep measures fd, fid, kid and pr (speed is measured for every point anyway)")
    if n < 2 or ref_n < 2:
        raise UserError("--n and --ref-n must be at least 2")
    check_pr_counts(metrics, n=n, ref_n=ref_n)
    source = resolve_source(run_dir)
    run_dir = run_of(source)
    out_dir = Path(out) if out is not None else eval_folder(run_dir)
    check_writable_folder(out_dir, "--out")
    model, schedule, config, step = load_trained(source, use_ema=use_ema, device=str(device))
    points = parse_sweep(sweep, schedule.T)
    if n < MIN_FID_SAMPLES and any(m in INCEPTION_METRICS for m in metrics):
        print(f"warning: FID/KID/PR on {n} samples per point: below {MIN_FID_SAMPLES}, biased high", file=sys.stderr)
    channels, image_size = model.image_shape[:2]
    extractors, classifier_facts = needed_extractors(metrics, config.data, channels, image_size, classifier, device)
    batch_size = batch_size or config.sample.batch_size
    guidance = config.sample.guidance if model.num_classes else None
    name = safe_name(name) if name else f"n{n}-seed{seed}" + ("" if use_ema else "-raw")
    split = held_out_split(config.data)
    real, references = {}, {}
    for kind, extractor in extractors.items():
        real[kind], _, references[extractor.extractor_id] = reference_features(
            config.data, split, extractor, ref_n, FEATURE_BATCH[kind], progress)
    # the same x_T for every point; stochastic samplers draw their later noise from a second generator
    noise = torch.randn((n, channels, image_size, image_size), generator=torch.Generator().manual_seed(seed))
    results = {"run_dir": str(run_dir), "name": name, "checkpoint_step": step, "weights": "ema" if use_ema else "raw",
               "weights_digest": weights_digest(model.state_dict()), "n": n, "seed": seed, "batch_size": batch_size,
               "guidance": guidance, "reference_split": split,
               "reference": references, "device": str(device), "ddpmlab": ddpmlab.__version__,
               "torch": torch.__version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "points": []}
    for method, steps in points:
        spacing = resolve_spacing(method, None)
        settings = {"checkpoint_step": step, "weights": results["weights"], "weights_digest": results["weights_digest"],
                    "sampler": method, "steps": steps,
                    "spacing": spacing, "eta": 0.0 if method == "ddim" else None, "n": n, "batch_size": batch_size,
                    "seed": seed, "noise": "shared-x_T", "guidance": guidance,
                    "clip_denoised": config.sample.clip_denoised}
        samples_path = out_dir / f"sweep-{name}-{point_name(method, steps, spacing)}.npz"
        start = time.perf_counter()
        images = load_samples(samples_path, settings)
        reused = images is not None
        if images is None:
            images, labels = generate_samples(model, schedule, n, method, steps, 0.0, batch_size, seed + 1, guidance,
                                              config.sample.clip_denoised, progress, prediction=config.diffusion.prediction,
                                              noise=noise, spacing=spacing)
            save_samples(samples_path, images, labels, settings)
        seconds = time.perf_counter() - start
        fake = {kind: extractor.extract(images, batch_size=FEATURE_BATCH[kind], progress=False)
                for kind, extractor in extractors.items()}
        scores = distance_scores(metrics, extractors, real, fake, device)
        results["points"].append({"sampler": method, "steps": steps, "spacing": spacing,
                                  "nfe": network_evaluations(method, steps, schedule.T),
                                  "seconds_per_1000": None if reused else 1000 * seconds / n,  # None: reused
                                  "samples": str(samples_path), "metrics": scores})
        results["extractors"] = extractor_ids(extractors, scores)
    untimed = [p for p in results["points"] if p["seconds_per_1000"] is None]
    if untimed:
        print(f"note: {len(untimed)} point(s) reused saved samples, so they have no timing; delete "
              f"{out_dir}/sweep-{name}-*.npz to time them", file=sys.stderr)
    results["metric_keys"] = list(results["points"][0]["metrics"])
    results["machine"] = machine_load()
    if classifier_facts:
        results["classifier"] = {k: classifier_facts[k] for k in ("path", "extractor_id", "test_accuracy", "test_split")}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"sweep-{name}.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    metric = results["metric_keys"][0]
    plot = plot_sweep(results["points"], metric, out_dir / f"sweep-{name}.png",
                      f"{run_dir.name} step {step}: {metric} on {n} samples vs {references[next(iter(references))]['count']} "
                      f"{split} images, same x_T for every point")
    results["json"], results["plot"] = str(json_path), str(plot)
    return results
