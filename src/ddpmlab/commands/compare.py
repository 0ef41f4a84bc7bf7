"""`ddpmlab compare SUITE`: train what a suite of models (commands/suite.py) is missing, measure every model the
same way, and write one report (REPORT_DIR/report.md, a self-contained index.html, results.json and the figures)."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ddpmlab.commands.evaluate import evaluate_run
from ddpmlab.commands.suite import Suite, SuiteRun, load_suite, suite_metrics
from ddpmlab.commands.sweep import evaluate_sweep, sweep_name
from ddpmlab.config import flatten, load_config
from ddpmlab.diffusion.process import loss_name
from ddpmlab.errors import Interrupted, UserError
from ddpmlab.eval.cache import dataset_key
from ddpmlab.eval.classifier import held_out_split
from ddpmlab.eval.scores import FEATURE_METRICS, headline_key
from ddpmlab.eval.speed import training_cost
from ddpmlab.eval.sweep import parse_sweep
from ddpmlab.methods import samples_in_one_pass, trained_parameters
from ddpmlab.paths import check_writable_folder
from ddpmlab.report.plots import make_figures
from ddpmlab.report.render import write_report
from ddpmlab.report.stability import run_stability
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import checkpoint_step, load_trained, stored_method
from ddpmlab.store.manifest import record_in_own_folder, recorded
from ddpmlab.store.pretrained import is_pretrained_folder, resolve_source
from ddpmlab.store.run_dir import has_content
from ddpmlab.train import Trainer

# config keys that may differ between a suite's entry and the run already in RUNS_DIR/NAME: where data is read from
# and the device it ran on say nothing about the model (train.steps may grow: the run is resumed)
IGNORED_CONFIG_KEYS = ("data.root", "data.download", "train.device")


# -- what to do with each run ------------------------------------------------------------------------
@dataclass
class PlannedRun:
    entry: SuiteRun
    run_dir: Path
    action: str  # "existing" (a `run:` entry), "reuse" (finished), "resume", "train" (new), "restart" (no checkpoint)
    config: object = None  # the run's Config (for "existing": as saved; else the suite's)
    step: int = 0
    pretrained: bool = False  # a shipped model's folder: read-only, its evaluation written under the report folder


def config_differences(saved, requested) -> list[str]:
    """'key: old -> new' for each setting where two Configs differ, ignoring IGNORED_CONFIG_KEYS."""
    old, new = flatten(saved), flatten(requested)
    return [f"{key}: {old[key]!r} -> {new[key]!r}" for key in old
            if old[key] != new[key] and key not in IGNORED_CONFIG_KEYS]


def read_run_config(run_dir: Path):
    """The Config saved in RUN_DIR/config.yaml; UserError when it is corrupt."""
    return load_config(str(Path(run_dir) / "config.yaml"))


def reference_key(plan: PlannedRun) -> str:
    """Which held-out images a run is measured against (eval.cache.dataset_key of its held-out split); UserError
    when it has none (a dataset without a test split and data.val_fraction=0)."""
    data = plan.config.data
    split = held_out_split(data)
    if split == "val" and data.val_fraction <= 0:
        raise UserError(f"suite run {plan.entry.name}: {data.name} has no test split and data.val_fraction=0, so "
                        f"there are no held-out images to measure it against; set data.val_fraction above 0")
    return f"{dataset_key(data, split)} {split}"


def check_same_reference(plans: list[PlannedRun]) -> str:
    """The held-out images every run of the suite is measured against; UserError naming two runs that differ
    (another dataset, size or validation split: their numbers would not be comparable)."""
    keys = {plan.entry.name: reference_key(plan) for plan in plans}
    first = plans[0].entry.name
    for name, key in keys.items():
        if key != keys[first]:
            raise UserError(f"suite runs {first} and {name} are measured against different held-out images "
                            f"({keys[first]} vs {key}): a comparison needs the same data settings for every run")
    return keys[first]


def plan_run(entry: SuiteRun, runs_dir: Path) -> PlannedRun:
    """What `compare` does with one suite entry, decided before any work (every UserError is raised here):
    evaluate an existing run; reuse a finished run in RUNS_DIR/NAME; resume one with checkpoints that is not
    finished; train a new one (or start again one that never reached a checkpoint)."""
    if entry.run is not None:
        try:
            run_dir = resolve_source(entry.run)
        except UserError as exc:
            raise UserError(f"suite run {entry.name}: {exc}") from None
        if is_pretrained_folder(run_dir):
            return PlannedRun(entry, run_dir, "existing", read_run_config(run_dir), step=checkpoint_step(run_dir),
                              pretrained=True)
        if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
            raise UserError(f"suite run {entry.name}: {run_dir} is not a run directory (no config.yaml)")
        checkpoints = ckpt.list_checkpoints(run_dir)
        if not checkpoints:
            raise UserError(f"suite run {entry.name}: {run_dir} has no checkpoint to evaluate")
        return PlannedRun(entry, run_dir, "existing", read_run_config(run_dir),
                          step=int(ckpt.read_progress(checkpoints[-1])["step"]))
    try:
        config = load_config(entry.config, entry.overrides)
    except UserError as exc:
        raise UserError(f"suite run {entry.name}: {exc}") from None
    run_dir = runs_dir / entry.name
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"suite run {entry.name}: {run_dir} is a file, not a run directory")
    if not has_content(run_dir):
        return PlannedRun(entry, run_dir, "train", config)
    checkpoints = ckpt.list_checkpoints(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"suite run {entry.name}: {run_dir} exists but is not a ddpmlab run; move it away or use "
                        f"another --runs-dir")
    saved = read_run_config(run_dir)
    changed = [c for c in config_differences(saved, config) if not c.startswith("train.steps:")]
    if changed:
        raise UserError(f"suite run {entry.name}: {run_dir} holds a run of another config ({'; '.join(changed[:3])}); "
                        f"delete it or use another --runs-dir")
    if not checkpoints:
        return PlannedRun(entry, run_dir, "restart", config)
    step = int(ckpt.read_progress(checkpoints[-1])["step"])
    if step > config.train.steps:
        raise UserError(f"suite run {entry.name}: {run_dir} was trained to step {step}, past the suite's "
                        f"train.steps={config.train.steps}; delete it or use another --runs-dir")
    return PlannedRun(entry, run_dir, "reuse" if step == config.train.steps else "resume", config, step)


def describe_plan(plan: PlannedRun) -> str:
    """One line on what `compare` does with a planned run, e.g. "resuming runs/compare/vae from step 250 to 600"."""
    if plan.action == "existing":
        what = f"pretrained model {plan.entry.run}" if plan.pretrained else str(plan.run_dir)
        return f"evaluating {what} as it is (step {plan.step})"
    if plan.action == "reuse":
        return f"reusing {plan.run_dir} (finished at step {plan.step})"
    if plan.action == "resume":
        return f"resuming {plan.run_dir} from step {plan.step} to {plan.config.train.steps}"
    again = " again (it has no checkpoint)" if plan.action == "restart" else ""
    return f"training {plan.config.method} for {plan.config.train.steps} steps into {plan.run_dir}{again}"


def train_planned(plan: PlannedRun, progress: bool) -> None:
    """Train, resume or start again a planned run (nothing for "existing" and "reuse")."""
    if plan.action in ("existing", "reuse"):
        return
    if plan.action == "resume":
        trainer = Trainer.resume(plan.run_dir, [f"train.steps={plan.config.train.steps}"], progress=progress)
    else:
        trainer = Trainer(plan.config, plan.run_dir, force=plan.action == "restart", progress=progress)
    summary = trainer.train()
    if summary["interrupted"]:
        raise Interrupted(f"training of {plan.entry.name} was interrupted at step {summary['step']} (checkpoint saved); "
                          f"run the same `ddpmlab compare` again to resume it", summary["signal"] or signal.SIGINT)


def parameter_count(run_dir: Path) -> int:
    """Parameters of every network the run trained (a GAN's discriminator and a VAE's encoder included)."""
    model, _, _, _ = load_trained(run_dir, device="cpu")
    return trained_parameters(model)


def seconds_per_1000(images_per_s: float | None) -> float | None:
    """Seconds to draw 1,000 samples at a throughput of images_per_s."""
    return 1000 / images_per_s if images_per_s else None


def saved_sweep(path: Path, step: int, digest: str, points: list[tuple[str, int]], metric_keys: list[str],
                extractors: dict) -> dict | None:
    """The sweep results at `path` (with "json" and "plot") when they are of this checkpoint step, these points and
    metrics, the same feature extractors and EMA weights (`digest`: eval.run's weights_digest), and their samples and
    plot are still there; else None.
    Reusing them keeps the first run's timings (a re-run on saved samples has none)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    plot = Path(path).with_suffix(".png")
    if (saved.get("checkpoint_step") != step or saved.get("weights") != "ema" or not plot.is_file()
            or saved.get("weights_digest") != digest
            or [(p["sampler"], p["steps"]) for p in saved.get("points", [])] != points
            or not set(metric_keys) <= set(saved.get("metric_keys", []))
            or any(saved.get("extractors", {}).get(k, v) != v for k, v in extractors.items())
            or not all(Path(p["samples"]).is_file() for p in saved["points"])):
        return None
    return {**saved, "json": str(path), "plot": str(plot)}


def measure_run(plan: PlannedRun, suite: Suite, metrics: list[str], n: int, classifier: str | None, device: str,
                progress: bool, out: Path | None = None) -> dict:
    """One table row: evaluate_run (and evaluate_sweep for a diffusion run when the suite has a sweep), training
    stability and cost, parameter count; every number with the file it came from. Results go to RUN_DIR/eval; a
    pretrained model's to OUT/pretrained/NAME (OUT: the report folder)."""
    # Score its samples.
    method = stored_method(plan.run_dir)
    one_pass = samples_in_one_pass(method)
    asked = [m for m in metrics if not ((one_pass or method == "ldm") and m == "nll")]  # no bound on pixels
    eval_dir = (Path(out or ".") / "pretrained" / plan.entry.name) if plan.pretrained else plan.run_dir / "eval"
    results = evaluate_run(plan.run_dir, SamplingSettings(), metrics=",".join([*asked, "speed"]), n=n, seed=suite.seed,
                           classifier=classifier, ref_n=suite.ref_n, device=device, progress=progress, out=eval_dir)

    # Gather the row: scores, cost, stability, size.
    settings, config = results["settings"], read_run_config(plan.run_dir)
    row = {"name": plan.entry.name, "method": method, "run_dir": str(plan.run_dir), "step": settings["checkpoint_step"],
           "source": plan.entry.run or " ".join([plan.entry.config, *plan.entry.overrides]),
           "sampler": "one pass" if one_pass else f"{settings['sampler']} {settings['steps']} steps "
                                                  f"({settings['nfe']} NFE)",
           "metrics": {k: v for k, v in results["metrics"].items()}, "protocols": results["protocols"], "n": n,
           "reference": results.get("reference", {}), "eval_json": results["json"],
           "samples_npz": results.get("samples", {}).get("path"), "speed": results["speed"],
           "seconds_per_1000": seconds_per_1000(results["metrics"].get("sampling_images_per_s")),
           "parameters": parameter_count(plan.run_dir),
           "stability": run_stability(plan.run_dir / "metrics.csv", method),  # n/a without a metrics.csv
           "training": training_cost(plan.run_dir, config),
           "loss": None if one_pass else loss_name(config.diffusion.prediction, config.diffusion.loss_weighting,
                                                   config.diffusion.min_snr_gamma)}

    # Sweep the samplers (or read the saved sweep of these weights).
    sweep_metrics = [m for m in metrics if m in FEATURE_METRICS]
    if suite.sweep and not one_pass and sweep_metrics:
        points = parse_sweep(suite.sweep, plan.config.diffusion.timesteps)
        sweep = saved_sweep(eval_dir / f"sweep-{sweep_name(row['step'], n, suite.seed)}.json", row["step"],
                            settings["weights_digest"], points, [headline_key(m) for m in sweep_metrics],
                            results["extractors"])
        if sweep is None:
            sweep = evaluate_sweep(plan.run_dir, suite.sweep, metrics=",".join(sweep_metrics), n=n, seed=suite.seed,
                                   classifier=classifier, ref_n=suite.ref_n, device=device, progress=progress,
                                   out=eval_dir)
        row["sweep"] = {"json": sweep["json"], "plot": sweep["plot"],
                        "points": [{"sampler": p["sampler"], "steps": p["steps"], "nfe": p["nfe"],
                                    "metrics": p["metrics"], "samples": p["samples"]} for p in sweep["points"]]}
    return row


# -- the report folder ------------------------------------------------------------------------------
REPORT_FILES = ("results.json", "report.md", "index.html")
REPORT_FOLDERS = ("figures", "pretrained")  # the figures; the results of shipped models (never written in the package)


def check_report_folder(out: Path) -> None:
    """OUT holds one report: a new or empty folder, or an earlier report ddpmlab wrote (its manifest lists what), whose
    files this one replaces. UserError for a folder without that list, and for a report file ddpmlab did not write."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    listed = recorded(out)
    if listed is None:
        raise UserError(f"--out {out} holds files that are not a ddpmlab report; choose a new or empty folder")
    for name in (*REPORT_FILES, *REPORT_FOLDERS):
        if (out / name).exists() and name not in listed:
            raise UserError(f"--out {out}: {name} was not written by ddpmlab; move it or choose another folder")


def start_report_folder(out: Path) -> None:
    """Create OUT with the list of what ddpmlab writes there, and list the report's files and folders in it."""
    record_in_own_folder(out, *(out / name for name in (*REPORT_FILES, *REPORT_FOLDERS)))


# -- the command -------------------------------------------------------------------------------------
def compare_suite(source: str, runs_dir: str | Path = "runs/compare", out: str | Path | None = None,
                  n: int | None = None, metrics: str | None = None, classifier: str | None = None,
                  device: str = "auto", progress: bool = True, say=print) -> dict:
    """Run the suite `source` (a shipped name or YAML path): train what RUNS_DIR is missing, evaluate every model
    with the same metrics, n, seed and reference, and write OUT (default reports/SUITE): report.md, index.html,
    results.json and figures/. Returns the report dict. Every UserError (unknown suite, missing run, unknown config,
    unwritable OUT or RUNS_DIR) is raised before anything is trained or written."""
    # Check the request and plan every run.
    suite = load_suite(source)
    n = n if n is not None else suite.n
    if n < 2:
        raise UserError("--n must be at least 2 (a covariance needs two images)")
    chosen_metrics = suite_metrics(metrics or suite.metrics)
    classifier = classifier or suite.classifier
    if classifier is not None and not Path(classifier).is_file():
        raise UserError(f"classifier file not found: {classifier}")
    out = Path(out) if out is not None else Path("reports") / suite.name
    runs_dir = Path(runs_dir)
    check_writable_folder(out, "--out")
    check_report_folder(out)
    plans = [plan_run(entry, runs_dir) for entry in suite.runs]
    check_same_reference(plans)
    if any(p.action in ("train", "restart", "resume") for p in plans):
        check_writable_folder(runs_dir, "--runs-dir")
    if suite.sweep:
        parse_sweep(suite.sweep, 10**9)  # the syntax only; steps are checked against each run's T later

    # Train what is missing.
    for i, plan in enumerate(plans, 1):
        say(f"[{i}/{len(plans)}] {plan.entry.name}: {describe_plan(plan)}")
        train_planned(plan, progress)

    # Measure every model.
    start_report_folder(out)
    rows = []
    for i, plan in enumerate(plans, 1):
        say(f"[{i}/{len(plans)}] {plan.entry.name}: evaluating {','.join(chosen_metrics)} on {n} samples")
        rows.append(measure_run(plan, suite, chosen_metrics, n, classifier, device, progress, out))

    # Write the report.
    report = {"suite": suite.name, "source": str(source), "description": suite.description, "n": n,
              "seed": suite.seed, "metrics": chosen_metrics, "sweep": suite.sweep, "ref_n": suite.ref_n,
              "runs_dir": str(runs_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "rows": rows, "figures": make_figures(rows, out / "figures")}
    return write_report(report, out)


def run(args) -> int:
    report = compare_suite(args.suite, args.runs_dir, args.out, args.n, args.metrics, args.classifier, args.device,
                           progress=not args.quiet, say=lambda line: print(line, flush=True))
    print(f"wrote {report['files']['markdown']}, {report['files']['html']} and {report['files']['json']}")
    return 0
