"""Results as terminal tables: one evaluation's metrics with what each was measured on, and a sampler sweep."""

from __future__ import annotations

from ddpmlab.eval.scores import LABELS
from ddpmlab.eval.sweep import ddpm_reference, relative_change


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
            counts[key] = f"{compared} vs {held_out['count']} {held_out.get('split') or held_out.get('source')}"
            if key == "fd_classifier":
                counts["fd_classifier_per_class"] = counts[key] + ", split by class"
                counts["class_accuracy"] = f"{results['settings']['n']} samples" if "settings" in results else ""
    for key in ("kid_inception_std", "pr_n"):
        counts.pop(key, None)
    if "pr_n" in results.get("metrics", {}):
        for key in ("precision_inception", "recall_inception"):
            counts[key] = f"{results['metrics']['pr_n']} vs {results['metrics']['pr_n']}"
    if "nll" in results:
        counts["nll_bits_per_dim"] = (f"{results['nll']['n']} {results['nll']['split']} images, "
                                      f"{results['nll']['timesteps']} timesteps each")
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
    return "\n".join([sweep_caption(results), *lines])


def sweep_caption(results: dict) -> str:
    """What every point of a sweep was measured on, e.g. "16 samples per point (seed 0, the same x_T for every
    point) vs 51 val images; fd_classifier with classifier-..."."""
    references = sorted({f"{info.get('count', '?')} {results.get('reference_split', 'held-out')} images"
                         for info in results.get("reference", {}).values()})
    extractors = ", ".join(f"{key} with {extractor}" for key, extractor in results.get("extractors", {}).items())
    return (f"{results.get('n', '?')} samples per point (seed {results.get('seed', '?')}, the same x_T for every "
            f"point) vs {' and '.join(references) or 'no reference'}" + (f"; {extractors}" if extractors else ""))
