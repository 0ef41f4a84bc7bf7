"""`ddpmlab compare SUITE`: train what a suite of models is missing, measure every model the same way, and write
one report (REPORT_DIR/report.md, a self-contained index.html, results.json and the figures).

A suite is a YAML file (shipped ones in ddpmlab/suites/) with suite-wide settings and a list of runs:

    n: 1000                 # samples per model (the same seed, the same held-out reference, the same metrics)
    metrics: fd             # comma-separated, of fid,kid,pr,fd,nll (speed is always measured)
    seed: 0
    sweep: ddim:10,20,50    # optional: quality against NFE for every diffusion run
    classifier: PATH        # optional: the FD classifier file (default: the dataset's shipped or cached one)
    ref_n: 10000            # optional: held-out images in the reference statistics
    runs:
      - {name: ddpm, config: cpu-demo, overrides: [train.steps=600]}   # trained into RUNS_DIR/ddpm
      - {name: old, run: runs/cpu-demo}                                # an existing run, evaluated as it is
      - {name: shipped, run: "pretrained:fashion-mnist"}               # a shipped model; results in REPORT_DIR/pretrained/NAME

Relative paths are read from the current folder, like every other path given to ddpmlab.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from ddpmlab.config import INT64_MAX, INT64_MIN, shown
from ddpmlab.errors import UserError

SUITE_KEYS = ("description", "runs", "n", "metrics", "seed", "sweep", "classifier", "ref_n")
RUN_KEYS = ("name", "run", "config", "overrides")
DEFAULT_N, DEFAULT_METRICS, DEFAULT_REF_N = 1000, "fd", 10000
EVAL_METRICS = ("fid", "kid", "pr", "fd", "nll")  # what a suite may ask for; speed is always measured
SWEEP_METRICS = ("fd", "fid", "kid", "pr")
SWEEP_KEYS = {"fd": "fd_classifier", "fid": "fid_inception", "kid": "kid_inception", "pr": "precision_inception"}
# config keys that may differ between a suite's entry and the run already in RUNS_DIR/NAME: where data is read from
# and the device it ran on say nothing about the model (train.steps may grow: the run is resumed)
IGNORED_CONFIG_KEYS = ("data.root", "data.download", "train.device")
PROGRESSION_GRIDS = 6  # a diffusion run's sample grids shown over training (evenly spaced, the last included)


@dataclass
class SuiteRun:
    name: str
    run: str | None = None  # an existing run directory, evaluated as it is
    config: str | None = None  # or a preset / YAML trained into RUNS_DIR/name
    overrides: list[str] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    source: str
    runs: list[SuiteRun]
    description: str = ""
    n: int = DEFAULT_N
    metrics: str = DEFAULT_METRICS
    seed: int = 0
    sweep: str | None = None
    classifier: str | None = None
    ref_n: int = DEFAULT_REF_N


# -- reading a suite ---------------------------------------------------------------------------------
def suite_names() -> list[str]:
    """Names of the suites shipped in the package, sorted."""
    folder = resources.files("ddpmlab") / "suites"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_suite_file(source: str) -> tuple[str, dict]:
    """(suite name, the mapping) of a shipped suite name or a YAML path; UserError for anything else."""
    from ddpmlab.config import parse_yaml, read_yaml_file

    path = Path(source)
    if source in suite_names():
        data, name = parse_yaml((resources.files("ddpmlab") / "suites" / f"{source}.yaml").read_text(), source), source
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"suite file not found: {source}")
        data, name = read_yaml_file(path, source), path.stem
    else:
        raise UserError(f"unknown suite {source!r}; suites: {', '.join(suite_names())} (or give a YAML path)")
    if not isinstance(data, dict):
        raise UserError(f"{source}: a suite must be a mapping with a `runs` list")
    return name, data


def _text(value, what: str) -> str:
    """A YAML scalar (string or number) as text; UserError naming `what` for a mapping, list, boolean or null (whose
    str() a YAML of nested aliases can make endless)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"{what} must be a string, got {shown(value)}")


def parse_suite(name: str, data: dict, source: str) -> Suite:
    """A Suite from a suite file's mapping; UserError naming the first bad key or entry."""
    from ddpmlab.eval.run import safe_name

    unknown = set(data) - set(SUITE_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown suite key {sorted(map(str, unknown))[0]!r}; keys: {', '.join(SUITE_KEYS)}")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: `runs` must be a non-empty list of {{name, config, overrides}} or {{name, run}}")
    runs = []
    for i, entry in enumerate(entries):
        where = f"{source}: runs[{i}]"
        if not isinstance(entry, dict) or set(entry) - set(RUN_KEYS) or not entry.get("name"):
            raise UserError(f"{where} must be a mapping with a name and either run or config (keys: "
                            f"{', '.join(RUN_KEYS)}), got {shown(entry)}")
        overrides = entry.get("overrides") or []
        overrides = overrides.split() if isinstance(overrides, str) else overrides
        if not isinstance(overrides, list):
            raise UserError(f"{where}: overrides must be a list of key=value, got {shown(overrides)}")
        run_name = _text(entry["name"], f"{where}: name")
        if safe_name(run_name) != run_name:
            raise UserError(f"{where}: name {run_name!r} becomes a folder name: use letters, digits, . _ - only")
        if ("run" in entry) == ("config" in entry):
            raise UserError(f"{where} ({run_name}): give either `run` (an existing run directory) or `config`")
        if "run" in entry and overrides:
            raise UserError(f"{where} ({run_name}): overrides apply to a `config` entry, not to an existing run")
        runs.append(SuiteRun(run_name, _text(entry["run"], f"{where}: run") if "run" in entry else None,
                             _text(entry["config"], f"{where}: config") if "config" in entry else None,
                             [_text(o, f"{where}: overrides[]") for o in overrides]))
    names = [r.name for r in runs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"{source}: two runs are named {duplicate!r}; names must differ")
    suite = Suite(name, source, runs, description=_text(data.get("description") or "", f"{source}: description"))
    for key, kind in (("n", int), ("seed", int), ("ref_n", int), ("metrics", str), ("sweep", str),
                      ("classifier", str)):
        if data.get(key) is not None:
            value = data[key]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                or not INT64_MIN <= value <= INT64_MAX):
                raise UserError(f"{source}: {key} must be an integer in -2**63..2**63-1, got {shown(value)}")
            setattr(suite, key, value if kind is int else _text(value, f"{source}: {key}"))
    return suite


def load_suite(source: str) -> Suite:
    """The suite a shipped name or YAML path describes; UserError for an unknown suite or a malformed file."""
    name, data = read_suite_file(source)
    return parse_suite(name, data, source)


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
    from ddpmlab.config import flatten

    old, new = flatten(saved), flatten(requested)
    return [f"{key}: {old[key]!r} -> {new[key]!r}" for key in old
            if old[key] != new[key] and key not in IGNORED_CONFIG_KEYS]


def read_run_config(run_dir: Path):
    """The Config saved in RUN_DIR/config.yaml; UserError when it is corrupt."""
    from ddpmlab.config import load_config

    return load_config(str(Path(run_dir) / "config.yaml"))


def reference_key(plan: PlannedRun) -> str:
    """Which held-out images a run is measured against (eval.cache.dataset_key of its held-out split); UserError
    when it has none (a dataset without a test split and data.val_fraction=0)."""
    from ddpmlab.eval.cache import dataset_key
    from ddpmlab.eval.classifier import held_out_split

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
    from ddpmlab.config import load_config
    from ddpmlab.train import checkpoint as ckpt
    from ddpmlab.train.run_dir import has_content

    if entry.run is not None:
        from ddpmlab.train.build import checkpoint_step
        from ddpmlab.train.pretrained import is_pretrained_folder, resolve_source

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
    from ddpmlab.train import Trainer

    if plan.action in ("existing", "reuse"):
        return
    if plan.action == "resume":
        trainer = Trainer.resume(plan.run_dir, [f"train.steps={plan.config.train.steps}"], progress=progress)
    else:
        trainer = Trainer(plan.config, plan.run_dir, force=plan.action == "restart", progress=progress)
    summary = trainer.train()
    if summary["interrupted"]:
        raise UserError(f"training of {plan.entry.name} was interrupted at step {summary['step']}; run the same "
                        f"`ddpmlab compare` again to resume it")


# -- measuring ---------------------------------------------------------------------------------------
def suite_metrics(text: str) -> list[str]:
    """The suite's metrics in EVAL_METRICS order; UserError for an unknown one (speed is always measured)."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in EVAL_METRICS]
    if unknown or not names:
        raise UserError(f"unknown suite metric {', '.join(unknown) or repr(text)}; choose from "
                        f"{','.join(EVAL_METRICS)} (speed is always measured)")
    return [m for m in EVAL_METRICS if m in names]


def parameter_count(run_dir: Path) -> int:
    """Parameters of every network the run trained (a GAN's discriminator and a VAE's encoder included)."""
    from ddpmlab.train.build import load_trained

    model, _, _, _ = load_trained(run_dir, device="cpu")
    return sum(p.numel() for p in model.parameters())


def seconds_per_1000(images_per_s: float | None) -> float | None:
    """Seconds to draw 1,000 samples at a throughput of images_per_s."""
    return 1000 / images_per_s if images_per_s else None


def saved_sweep(path: Path, step: int, digest: str, points: list[tuple[str, int]], metric_keys: list[str],
                extractors: dict) -> dict | None:
    """The sweep results at `path` (with "json" and "plot") when they are of this checkpoint step, these points and
    metrics, the same feature extractors and EMA weights (`digest`: eval.run's weights_digest), and their samples and
    plot are still there; else None.
    Reusing them keeps the first run's timings (a re-run on saved samples has none)."""
    import json

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
    from ddpmlab.eval.run import evaluate_run
    from ddpmlab.eval.speed import training_cost
    from ddpmlab.methods import samples_in_one_pass
    from ddpmlab.report.stability import run_stability
    from ddpmlab.train.build import stored_method

    method = stored_method(plan.run_dir)
    one_pass = samples_in_one_pass(method)
    asked = [m for m in metrics if not (one_pass and m == "nll")]
    eval_dir = (Path(out or ".") / "pretrained" / plan.entry.name) if plan.pretrained else plan.run_dir / "eval"
    results = evaluate_run(plan.run_dir, ",".join([*asked, "speed"]), n, seed=suite.seed, classifier=classifier,
                           ref_n=suite.ref_n, device=device, progress=progress, out=eval_dir)
    settings = results["settings"]
    row = {"name": plan.entry.name, "method": method, "run_dir": str(plan.run_dir), "step": settings["checkpoint_step"],
           "source": plan.entry.run or " ".join([plan.entry.config, *plan.entry.overrides]),
           "sampler": "one pass" if one_pass else f"{settings['sampler']} {settings['steps']} steps "
                                                  f"({settings['nfe']} NFE)",
           "metrics": {k: v for k, v in results["metrics"].items()}, "n": n,
           "reference": results.get("reference", {}), "eval_json": results["json"],
           "samples_npz": results.get("samples", {}).get("path"), "speed": results["speed"],
           "seconds_per_1000": seconds_per_1000(results["metrics"].get("sampling_images_per_s")),
           "parameters": parameter_count(plan.run_dir),
           "stability": run_stability(plan.run_dir / "metrics.csv", method),  # n/a without a metrics.csv
           "training": training_cost(plan.run_dir, read_run_config(plan.run_dir).train.batch_size)}
    sweep_metrics = [m for m in metrics if m in SWEEP_METRICS]
    if suite.sweep and not one_pass and sweep_metrics:
        from ddpmlab.eval.sweep import evaluate_sweep, parse_sweep

        points = parse_sweep(suite.sweep, plan.config.diffusion.timesteps)
        sweep = saved_sweep(eval_dir / f"sweep-n{n}-seed{suite.seed}.json", row["step"], settings["weights_digest"],
                            points, [SWEEP_KEYS[m] for m in sweep_metrics], results["extractors"])
        if sweep is None:
            sweep = evaluate_sweep(plan.run_dir, suite.sweep, ",".join(sweep_metrics), n, seed=suite.seed,
                                   classifier=classifier, ref_n=suite.ref_n, device=device, progress=progress,
                                   out=eval_dir)
        row["sweep"] = {"json": sweep["json"], "plot": sweep["plot"],
                        "points": [{"sampler": p["sampler"], "steps": p["steps"], "nfe": p["nfe"],
                                    "metrics": p["metrics"], "samples": p["samples"]} for p in sweep["points"]]}
    return row


# -- figures -----------------------------------------------------------------------------------------
def make_figures(rows: list[dict], folder: Path) -> dict:
    """Write the report's figures into `folder` and return their paths relative to its parent: loss curves per
    method family, each run's sample grid, each diffusion run's grids over training and its sweep plot."""
    from ddpmlab.report.plots import (FAMILIES, FAMILY_TITLES, evenly_spaced, family_columns, loss_curves,
                                      plot_loss_family, samples_grid)
    from ddpmlab.train.log import read_metrics

    folder.mkdir(parents=True, exist_ok=True)
    relative = lambda path: f"{folder.name}/{Path(path).name}"  # noqa: E731 - paths as report.md links them
    figures = {"loss": [], "samples": [], "progression": [], "sweeps": []}
    families: dict[str, dict] = {}
    for row in rows:
        family = FAMILIES.get(row["method"], row["method"])
        metrics_path = Path(row["run_dir"]) / "metrics.csv"
        if metrics_path.is_file():
            families.setdefault(family, {})[row["name"]] = loss_curves(read_metrics(metrics_path),
                                                                       family_columns(family))
    for family, runs in families.items():
        path = plot_loss_family(runs, family_columns(family), folder / f"loss-{family}.png",
                                FAMILY_TITLES.get(family, family))
        figures["loss"].append({"family": family, "runs": list(runs), "path": relative(path)})
    for row in rows:
        if row.get("samples_npz") and Path(row["samples_npz"]).is_file():
            path = samples_grid(Path(row["samples_npz"]), folder / f"samples-{row['name']}.png")
            figures["samples"].append({"name": row["name"], "path": relative(path), "npz": row["samples_npz"]})
        grids = sorted((Path(row["run_dir"]) / "samples").glob("step_*.png"))
        if row["method"] == "ddpm" and grids:
            chosen = []
            for grid in evenly_spaced(grids, PROGRESSION_GRIDS):
                copy = shutil.copyfile(grid, folder / f"progress-{row['name']}-{grid.name}")
                chosen.append({"step": int(grid.stem.split("_")[1]), "path": relative(copy)})
            figures["progression"].append({"name": row["name"], "grids": chosen})
        if row.get("sweep"):
            copy = shutil.copyfile(row["sweep"]["plot"], folder / f"sweep-{row['name']}.png")
            figures["sweeps"].append({"name": row["name"], "path": relative(copy), "json": row["sweep"]["json"]})
    return figures


# -- the command -------------------------------------------------------------------------------------
def compare_suite(source: str, runs_dir: str | Path = "runs/compare", out: str | Path | None = None,
                  n: int | None = None, metrics: str | None = None, classifier: str | None = None,
                  device: str = "auto", progress: bool = True, say=print) -> dict:
    """Run the suite `source` (a shipped name or YAML path): train what RUNS_DIR is missing, evaluate every model
    with the same metrics, n, seed and reference, and write OUT (default reports/SUITE): report.md, index.html,
    results.json and figures/. Returns the report dict. Every UserError (unknown suite, missing run, unknown config,
    unwritable OUT or RUNS_DIR) is raised before anything is trained or written."""
    from ddpmlab.paths import check_writable_folder
    from ddpmlab.report.render import write_report

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
    plans = [plan_run(entry, runs_dir) for entry in suite.runs]
    check_same_reference(plans)
    if any(p.action in ("train", "restart", "resume") for p in plans):
        check_writable_folder(runs_dir, "--runs-dir")
    if suite.sweep:
        from ddpmlab.eval.sweep import parse_sweep

        parse_sweep(suite.sweep, 10**9)  # the syntax only; steps are checked against each run's T later
    for i, plan in enumerate(plans, 1):
        say(f"[{i}/{len(plans)}] {plan.entry.name}: {describe_plan(plan)}")
        train_planned(plan, progress)
    rows = []
    for i, plan in enumerate(plans, 1):
        say(f"[{i}/{len(plans)}] {plan.entry.name}: evaluating {','.join(chosen_metrics)} on {n} samples")
        rows.append(measure_run(plan, suite, chosen_metrics, n, classifier, device, progress, out))
    out.mkdir(parents=True, exist_ok=True)
    report = {"suite": suite.name, "source": str(source), "description": suite.description, "n": n,
              "seed": suite.seed, "metrics": chosen_metrics, "sweep": suite.sweep, "ref_n": suite.ref_n,
              "runs_dir": str(runs_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "rows": rows, "figures": make_figures(rows, out / "figures")}
    return write_report(report, out)
