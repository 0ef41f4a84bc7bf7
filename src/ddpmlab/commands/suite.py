"""A comparison suite: the YAML file `ddpmlab compare` reads (shipped ones in ddpmlab/suites/), parsed and checked.

A suite holds suite-wide settings and a list of runs:

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

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ddpmlab.config import INT64_MAX, INT64_MIN, parse_yaml, read_yaml_file, shown
from ddpmlab.errors import UserError
from ddpmlab.eval.scores import METRICS
from ddpmlab.paths import safe_name

SUITE_KEYS = ("description", "runs", "n", "metrics", "seed", "sweep", "classifier", "ref_n")
RUN_KEYS = ("name", "run", "config", "overrides")
DEFAULT_N, DEFAULT_METRICS, DEFAULT_REF_N = 1000, "fd", 10000
EVAL_METRICS = tuple(name for name in METRICS if name != "speed")  # what a suite may ask for; speed always measured


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


# -- measuring ---------------------------------------------------------------------------------------
def suite_metrics(text: str) -> list[str]:
    """The suite's metrics in EVAL_METRICS order; UserError for an unknown one (speed is always measured)."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in EVAL_METRICS]
    if unknown or not names:
        raise UserError(f"unknown suite metric {', '.join(unknown) or repr(text)}; choose from "
                        f"{','.join(EVAL_METRICS)} (speed is always measured)")
    return [m for m in EVAL_METRICS if m in names]
