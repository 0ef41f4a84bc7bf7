"""The comparison report as files: results.json (every number and the files behind it), report.md (figures
linked from figures/) and index.html (self-contained: figures embedded as data URIs, no network).

Both documents come from one list of blocks (`report_blocks`), so they always say the same thing:
("h", level, text), ("p", text), ("table", id, header, rows), ("images", [(caption, path)]), ("list", items).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from ddpmlab.eval.speed import SHARED_LOAD
from ddpmlab.report.plots import GRID_IMAGES
from ddpmlab.report.stability import EMA_WEIGHT, SPIKE_FACTOR, THRESHOLDS

METRIC_COLUMNS = (  # (key in the eval results, column title); shown when the suite asked for the metric
    ("fd", "fd_classifier", "FD"), ("fid", "fid_inception", "FID"), ("kid", "kid_inception", "KID"),
    ("pr", "precision_inception", "precision"), ("pr", "recall_inception", "recall"),
    ("nll", "nll_bits_per_dim", "NLL (bits/dim)"))


# -- numbers as text ---------------------------------------------------------------------------------
def fmt_number(value, digits: int = 4) -> str:
    """`digits` significant digits; "n/a" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def fmt_seconds(seconds) -> str:
    """e.g. "42 s", "7.3 min", "2.1 h"; "n/a" for None."""
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def fmt_count(count) -> str:
    """e.g. 35,746,307 -> "35.7 M", 61,000 -> "61 k"."""
    if count is None:
        return "n/a"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return str(count)


# -- the content -------------------------------------------------------------------------------------
def metric_cell(metrics: dict, key: str) -> str:
    """A metric as the table shows it: KID with its std over subsets, NLL with its standard error."""
    spread = {"kid_inception": "kid_inception_std", "nll_bits_per_dim": "nll_bits_per_dim_se"}.get(key)
    if spread and metrics.get(key) is not None and metrics.get(spread) is not None:
        return f"{fmt_number(metrics[key])} ± {fmt_number(metrics[spread], 2)}"
    return fmt_number(metrics.get(key))


def results_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the main table: one row per model, the suite's metrics with their sample counts, the
    stability verdict and CV, training wall-clock and images/s, seconds per 1,000 samples, parameters."""
    asked = [(key, title) for metric, key, title in METRIC_COLUMNS if metric in report["metrics"]]
    header = ["model", "method", "sampler", "step",
              *[f"{title} (n={report['n']})" if key != "nll_bits_per_dim" else f"{title} ({nll_protocol(report)})"
                for key, title in asked],
              "stability (max CV)", "training wall-clock", "training images/s", "s / 1,000 samples", "parameters"]
    rows = []
    for row in report["rows"]:
        stability, training = row["stability"], row["training"]
        trained, sampled = shared_mark(training_shared(row)), shared_mark(sampling_shared(row))
        rows.append([row["name"], row["method"], row["sampler"], str(row["step"]),
                     *[metric_cell(row["metrics"], key) for key, _ in asked],
                     f"{stability['verdict']} ({fmt_number(stability['cv'], 2)})",
                     fmt_seconds(training.get("train_wall_s")) + trained,
                     fmt_number(training.get("train_images_per_s"), 3) + trained,
                     fmt_number(row["seconds_per_1000"], 3) + sampled, fmt_count(row["parameters"])])
    return header, rows


def nll_protocol(report: dict) -> str:
    """What the NLL column was measured on (not the samples: held-out images, a number of timesteps each), e.g.
    "1000 test images, 1000 timesteps each"; per model when they differ."""
    texts = {row["name"]: f"{p['n']} {p['split']} images, {p['timesteps']} timesteps each"
             for row in report["rows"] if (p := row.get("protocols", {}).get("nll"))}
    if len(set(texts.values())) <= 1:
        return next(iter(texts.values()), "held-out images")
    return "; ".join(f"{name}: {text}" for name, text in texts.items())


def sampling_shared(row: dict) -> bool:
    """Whether other work shared the CPU while the row's sampling was timed (load average well above torch's
    threads right after timing)."""
    speed = row["speed"]
    return (speed.get("load_average_1min") or 0) > speed.get("torch_threads", 1) + SHARED_LOAD


def training_shared(row: dict) -> bool | None:
    """Whether other work shared the CPU while the row's model trained (its metrics.csv's other_load); None when
    the run did not record it."""
    return row["training"].get("train_cpu_shared")


def shared_mark(shared: bool | None) -> str:
    """What a timing's cell adds: " (CPU shared)" when other work shared the CPU, "" otherwise."""
    return " (CPU shared)" if shared else ""


def stability_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each run's figures per loss column."""
    header = ["model", "loss", "CV of smoothed loss", f"spikes > {SPIKE_FACTOR:g}× median", "NaN/inf rows",
              "trend (last ¼ / second ¼)", "verdict"]
    rows = [[row["name"], column, fmt_number(f["cv"], 3), str(f["spikes"]), str(f["non_finite"]),
             fmt_number(f["trend"], 3), f["verdict"]]
            for row in report["rows"] for column, f in row["stability"]["losses"].items()]
    return header, rows


def files_list(report: dict) -> list[str]:
    """Where every number and figure comes from, one line per run: samples .npz, eval JSON, metrics.csv, sweep."""
    items = []
    for row in report["rows"]:
        parts = [f"samples {row['samples_npz']}" if row.get("samples_npz") else None,
                 f"results {row['eval_json']}", f"training log {Path(row['run_dir']) / 'metrics.csv'}"]
        if row.get("sweep"):
            parts.append(f"sweep {row['sweep']['json']} with samples "
                         + ", ".join(p["samples"] for p in row["sweep"]["points"]))
        items.append(f"{row['name']} ({row['source']}): " + "; ".join(p for p in parts if p))
    return items


def settings_text(report: dict) -> str:
    """One paragraph on how every model was measured."""
    references = {f"{ref.get('count', '?')} {ref.get('split', 'held-out')} images" for row in report["rows"]
                  for ref in row.get("reference", {}).values()}
    return (f"Every model: {report['n']} samples from seed {report['seed']} (EMA weights, newest checkpoint), "
            f"metrics {', '.join(report['metrics'])} against the same cached reference statistics "
            f"({'; '.join(sorted(references)) or 'none'}); diffusion models sampled as the sampler column says. "
            f"FD is the Fréchet distance of the dataset classifier's features, FID that of Inception's: two different "
            f"numbers, comparable only within a column. Seconds per 1,000 samples: the median of timed batches on the "
            f"warm model; training images/s: images seen over the training wall-clock (validation, grids and "
            f"checkpoints included).")


def load_note(report: dict) -> str | None:
    """A warning when the CPU was shared while timing sampling or while training (load average well above torch's
    threads), naming the runs whose training load is not known; else None."""
    sampled = [row["name"] for row in report["rows"] if sampling_shared(row)]
    trained = [row["name"] for row in report["rows"] if training_shared(row)]
    unknown = [row["name"] for row in report["rows"] if row["training"] and training_shared(row) is None]
    notes = []
    if sampled:
        notes.append(f"Sampling timings of {', '.join(sampled)} were taken while other work shared the CPU (1-minute "
                     f"load average above torch's threads): their seconds per 1,000 samples are pessimistic.")
    if trained:
        notes.append(f"{', '.join(trained)} trained while other work shared the CPU (the median 1-minute load average "
                     f"of their metrics.csv rows above torch's threads): their training wall-clock and images/s are "
                     f"pessimistic, not the speed of the method.")
    if unknown:
        notes.append(f"Whether the CPU was shared while {', '.join(unknown)} trained is not recorded (a metrics.csv "
                     f"without other_load): read their training speed with care.")
    return " ".join(notes) or None


def stability_text() -> str:
    cv, spikes, _, trend = (THRESHOLDS[k] for k in ("cv", "spikes", "non_finite", "trend"))
    return (f"Over the second half of training, for each loss (a DDPM's and VAE's loss, a GAN's loss_d and "
            f"loss_g; a latent DDPM's loss_ae (loss_d, loss_g) and loss, each over its own stage): the coefficient "
            f"of variation (std/|mean|) of the loss smoothed by an EMA of weight {EMA_WEIGHT:g} per logged row; "
            f"spikes, logged values above {SPIKE_FACTOR:g}× the median; NaN/inf rows (divergence, counted over the "
            f"whole run or stage); and the trend, the mean of the last quarter over that of the second (below 1: "
            f"still improving). Stable: CV ≤ {cv[0]:g}, no spike, no NaN, trend ≤ {trend[0]:g}. "
            f"Unstable: CV > {cv[1]:g}, more than {spikes[1]} spikes, any NaN, or trend > {trend[1]:g}. Moderate "
            f"otherwise. A run's verdict is its worst loss's.")


def report_blocks(report: dict) -> list[tuple]:
    """The report's content, in order, as blocks both renderers read."""
    figures = report["figures"]
    blocks = [("h", 1, f"ddpmlab compare: {report['suite']}")]
    if report.get("description"):
        blocks.append(("p", report["description"]))
    blocks += [("p", settings_text(report)), ("table", "results", *results_table(report))]
    note = load_note(report)
    if note:
        blocks.append(("p", note))
    blocks += [("h", 2, "Training stability"), ("p", stability_text()), ("table", "stability", *stability_table(report))]
    if figures["loss"]:
        blocks += [("h", 2, "Loss curves"),
                   ("images", [(f"{f['family']}: {', '.join(f['runs'])}", f["path"]) for f in figures["loss"]])]
    if figures["samples"]:
        blocks += [("h", 2, f"Samples (the first {min(GRID_IMAGES, report['n'])} of each model's {report['n']}, "
                            f"seed {report['seed']})"),
                   ("images", [(f["name"], f["path"]) for f in figures["samples"]])]
    for progression in figures["progression"]:
        blocks += [("h", 2, f"{progression['name']} over training (fixed noise)"),
                   ("images", [(f"step {g['step']}", g["path"]) for g in progression["grids"]])]
    if figures["sweeps"]:
        blocks += [("h", 2, "Quality against sampling cost (diffusion models, same x_T for every point)"),
                   ("images", [(f["name"], f["path"]) for f in figures["sweeps"]])]
    blocks += [("h", 2, "Files behind every number"),
               ("p", "Each figure can be recomputed from these files (results.json beside this report holds every "
                     "number):"), ("list", files_list(report))]
    return blocks


# -- the two renderers -------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(blocks: list[tuple]) -> str:
    """Markdown with images linked by their paths relative to the report folder."""
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            _, _, header, rows = block
            lines += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
        elif kind == "images":
            captions = [caption for caption, _ in block[1]]
            lines += ["| " + " | ".join(map(_md_cell, captions)) + " |", "|" + "---|" * len(captions),
                      "| " + " | ".join(f"![{_md_cell(c)}]({p})" for c, p in block[1]) + " |", ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
    return "\n".join(lines)


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.images{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}
figcaption{font-size:13px;color:#555}img{image-rendering:pixelated;max-width:100%}
#selfcheck{display:none}"""

# fills <pre id="selfcheck" hidden> once the page has loaded: rows of the results table, whether each image decoded
# and whether the hook itself shows, so that a headless browser's --dump-dom tells a test what a reader would see
# (the hook is for tests, never part of what a reader sees)
SELF_CHECK = """window.addEventListener("load", function () {
  var rows = document.querySelectorAll("#results tbody tr").length;
  var images = Array.prototype.map.call(document.images, function (img) {
    return {name: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth};
  });
  var hook = document.getElementById("selfcheck");
  hook.textContent = JSON.stringify({rows: rows, images: images, hook_shown: hook.getClientRects().length > 0});
});"""


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    """One self-contained HTML page: every image embedded from `folder` as a data URI, no external resource."""
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "table":
            _, table_id, header, rows = block
            parts.append(f"<table id=\"{table_id}\"><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</tbody></table>")
        elif kind == "images":
            parts.append("<div class=\"images\">" + "".join(
                f"<figure><img alt=\"{esc(caption)}\" src=\"{data_uri(folder / path)}\">"
                f"<figcaption>{esc(caption)}</figcaption></figure>" for caption, path in block[1]) + "</div>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block[1]) + "</ul>")
    parts.append(f"<pre id=\"selfcheck\" hidden>self-check pending</pre><script>{SELF_CHECK}</script></body></html>\n")
    return "\n".join(parts)


def json_safe(value):
    """`value` with NaN and inf (the stability of a very short run) as None, so that results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(report: dict, folder: Path) -> dict:
    """Write results.json, report.md and index.html into `folder` (figures/ already there); returns `report` with
    their paths under "files"."""
    folder = Path(folder)
    blocks = report_blocks(report)
    files = {"json": folder / "results.json", "markdown": folder / "report.md", "html": folder / "index.html"}
    files["json"].write_text(json.dumps(json_safe(report), indent=1) + "\n")
    files["markdown"].write_text(render_markdown(blocks))
    files["html"].write_text(render_html(blocks, folder, f"ddpmlab compare: {report['suite']}"))
    return {**report, "files": {k: str(v) for k, v in files.items()}}
