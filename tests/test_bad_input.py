"""Hostile input at `ddpmlab config`, `train`, `sample` and `eval` (issue 13), property-based with hypothesis.

Random config values and overrides (wrong types, zero, negative, huge, NaN, inf, empty strings, unknown keys and
sections, lists where scalars are expected, random text) and random flag values. Every outcome is a success or
one `error: ...` line on stderr with exit status 2 (warning lines may precede it): never a traceback, never a
hang (each call has a time limit), and the run directory a command was pointed at keeps every file it had (eval
may rewrite its own eval/ files when it succeeds). The CLI runs in-process on tiny runs trained once. Valid values
are drawn small, and an example whose config is valid but would train, sample or read much is discarded (not run),
so bad values stay bad and good ones stay cheap.

Examples per property are in EXAMPLES; on CI (CI set) the draws are derandomized, so every run tries the same ones.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import signal
import string
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import pytest
import torch

pytest.importorskip("hypothesis", reason="pip install -e .[dev] (scripts/setup.sh installs it)")
from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ddpmlab.cli import main  # noqa: E402
from ddpmlab.config import (  # noqa: E402
    BAD_IMAGE_POLICIES,
    DATASETS,
    LOSS_WEIGHTINGS,
    LR_SCHEDULES,
    METHODS,
    PREDICTIONS,
    RECONSTRUCTIONS,
    SCHEDULES,
    Config,
    apply_overrides,
    load_config,
)
from ddpmlab.errors import UserError  # noqa: E402
from ddpmlab.samplers import SAMPLERS  # noqa: E402
from ddpmlab.store.manifest import MANIFEST_FILE  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the 5000-digit numbers
EXAMPLES = {"config": 300, "config_file": 150, "train": 30, "resume": 10, "sample": 80, "eval": 30}
CALL_SECONDS = 300  # one CLI call (about a second on an idle core); past it, a hang fails the example


def fuzz(name: str):
    return settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


# -- running the CLI --------------------------------------------------------------------------------------------
def _timed_out(signum, frame):
    raise TimeoutError(f"a ddpmlab call ran past {CALL_SECONDS} s")


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of `ddpmlab ARGV` in this process; SystemExit (argparse) counts as its status."""
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(CALL_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def check_outcome(code: int, err: str) -> bool:
    """True for a success, False for a refusal; fails unless it is one or the other. Each outcome is a hypothesis
    event (pytest --hypothesis-show-statistics counts them)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    if code == 0:
        assert not any(line.startswith("error") for line in lines), err
        event("success")
        return True
    assert code == 2 and lines and lines[-1].startswith("error: "), (code, err)
    event("refused")
    return False


def files_of(folder: Path) -> dict:
    """{relative path: SHA-256} of every file under `folder` ({} when it does not exist)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


# -- values -----------------------------------------------------------------------------------------------------
BAD_TEXTS = ["", "null", "~", "nan", ".nan", "NaN", "inf", "-inf", ".inf", "-.inf", "0", "-1", "-0.5", "-7", "1e400",
             "-1e400", str(2**63), str(-2**63 - 1), str(10**30), "1e30", "[]", "[1, 2]", "[[1]]", "[.nan]", "{a: 1}",
             "{}", "true", "false", "yes", "abc", "''", "' '", "1.5", "0x10", "0o7", "1_000", "2020-13-45",
             "2020-01-01", "!!binary aGVsbG8=", "!!python/object/apply:os.system [true]", "&a [*a]", "*a", "%",
             "{", "[", '"unterminated', "'", ":", "- a", "a: b: c", "\t", "\\n", "line\nbreak", "é", "9" * 5000,
             "-9" * 2500, "1e-400", "0.0", "-0"]
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=16)
NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True)).map(str)
CHOICES = {"method": METHODS, "data.name": DATASETS, "diffusion.schedule": SCHEDULES, "diffusion.prediction": PREDICTIONS,
           "diffusion.loss_weighting": LOSS_WEIGHTINGS, "sample.sampler": tuple(SAMPLERS), "train.device": ("auto", "cpu", "cuda"),
           "train.lr_schedule": LR_SCHEDULES,
           "vaegan.reconstruction": RECONSTRUCTIONS, "data.on_bad_image": BAD_IMAGE_POLICIES}
SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name != "method"]


def _keys() -> dict[str, object]:
    """{"section.key": its annotation} for every setting, and {"method": str}."""
    keys = {"method": str}
    for section in SECTIONS:
        hints = get_type_hints(type(getattr(Config(), section)))
        keys.update({f"{section}.{name}": hint for name, hint in hints.items()})
    return keys


KEYS = _keys()


def _small_valid(key: str, annotation) -> st.SearchStrategy:
    """Values of the key's type, small: most pass validation and cost little."""
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not list:  # X | None
        return st.one_of(st.just("null"), _small_valid(key, args[0]))
    if get_origin(annotation) is list:
        return st.lists(st.integers(1, 4), min_size=1, max_size=3).map(lambda v: str(v))
    if annotation is bool:
        return st.sampled_from(["true", "false"])
    if annotation is int:
        return st.one_of(st.integers(1, 4), st.integers(0, 64)).map(str)
    if annotation is float:
        return st.floats(0, 1).map(repr)
    return TEXT


def value_for(key: str) -> st.SearchStrategy:
    """Any value for `key`: hostile text, any number, random text, or one of its type."""
    return st.one_of(st.sampled_from(BAD_TEXTS), NUMBERS, TEXT, _small_valid(key, KEYS.get(key, str)))


IDENTIFIER = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
HOSTILE_OVERRIDE = st.one_of(
    st.sampled_from(sorted(KEYS)).flatmap(lambda key: value_for(key).map(lambda value: f"{key}={value}")),
    st.tuples(st.sampled_from(SECTIONS), IDENTIFIER, st.sampled_from(BAD_TEXTS)).map(lambda t: f"{t[0]}.{t[1]}={t[2]}"),
    st.tuples(IDENTIFIER, IDENTIFIER, st.sampled_from(BAD_TEXTS)).map(lambda t: f"{t[0]}.{t[1]}={t[2]}"),
    st.sampled_from(["train", "train.steps", "=1", ".x=1", "train.=1", "train.steps.x=1", "a.b.c=1", "method",
                     "data=1", "train=[1]", "train.steps==1", "train.steps= 1", "-x=1"]),
    TEXT,
)
VALID_OVERRIDE = st.sampled_from(sorted(KEYS)).flatmap(
    lambda key: _small_valid(key, KEYS[key]).map(lambda value: f"{key}={value}"))


def overrides(valid_share: int, min_size: int = 0, max_size: int = 5) -> st.SearchStrategy:
    """Lists of overrides, each of a type-correct small value `valid_share` times in (valid_share + 1)."""
    return st.lists(st.sampled_from([True] * valid_share + [False]).flatmap(
        lambda valid: VALID_OVERRIDE if valid else HOSTILE_OVERRIDE), min_size=min_size, max_size=max_size)


# -- `ddpmlab config`: validation alone, every value ---------------------------------------------------------------
@fuzz("config")
@given(items=overrides(valid_share=1), base=st.sampled_from(["tiny", "cpu-demo", "cifar10-vae"]))
def test_config_overrides(items, base):
    code, err = run_cli(["config", base, *items])
    check_outcome(code, err)


YAML_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), TEXT,
                      st.sampled_from([v for v in BAD_TEXTS if "\n" not in v]))
YAML_VALUE = st.recursive(YAML_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
YAML_SECTION = st.dictionaries(st.one_of(st.sampled_from([k.split(".")[-1] for k in KEYS]), IDENTIFIER),
                               st.one_of(YAML_VALUE, st.sampled_from(BAD_TEXTS)), max_size=4)
YAML_DOCUMENT = st.one_of(st.dictionaries(st.one_of(st.sampled_from(SECTIONS + ["method"]), IDENTIFIER),
                                          st.one_of(YAML_SECTION, YAML_VALUE), max_size=4), YAML_VALUE)


def as_yaml(items: list[str]) -> str:
    """Overrides written as a YAML config: `method: x`, then `section:` blocks of `  key: value` lines."""
    lines = [f"method: {item.partition('=')[2]}" for item in items if item.startswith("method=")]
    for item in items:
        key, _, value = item.partition("=")
        if key.count(".") == 1:
            section, name = key.split(".")
            lines += [f"{section}:", f"  {name}: {value}"]
    return "\n".join(lines) + "\n"


@fuzz("config_file")
@given(document=st.one_of(YAML_DOCUMENT, overrides(valid_share=4, max_size=4).map(as_yaml)),
       raw=st.one_of(st.none(), st.none(), st.binary(max_size=40)))
def test_config_files(tmp_path_factory, document, raw):
    import yaml

    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    text = document if isinstance(document, str) else yaml.safe_dump(document, allow_unicode=True)
    path.write_bytes(raw if raw is not None else text.encode())
    code, err = run_cli(["config", path])
    check_outcome(code, err)


# -- `ddpmlab train` ----------------------------------------------------------------------------------------------
CHEAP_TRAINING = ["data.synthetic_count=64", "train.steps=2", "train.batch_size=8", "train.log_every=1",
                  "train.val_every=1", "train.val_batches=1", "train.sample_every=1000", "train.sample_n=4",
                  "train.checkpoint_every=1000", "sample.steps=4", "train.device=cpu"]


def affordable(config: Config, steps: int = 3, images: int = 128) -> bool:
    """A config that trains, validates and draws its grid in about a second on a CPU, reading no files (and compiles
    nothing: torch.compile takes minutes)."""
    d, m, f, t, s = config.data, config.model, config.diffusion, config.train, config.sample
    baselines = [getattr(config, name) for name in ("vae", "dcgan", "vaegan")]
    return (d.name == "synthetic" and d.synthetic_count <= images and d.synthetic_size <= 32
            and (d.image_size or 0) <= 32 and t.steps <= steps and t.batch_size <= 64 and t.val_batches <= 2 and t.sample_n <= 16
            and m.channels <= 32 and len(m.channel_mult) <= 3 and max(m.channel_mult) <= 4 and m.num_res_blocks <= 2
            and all(b.latent_dim <= 256 and b.base_channels <= 64 for b in baselines)
            and (f.timesteps <= 100 if s.sampler == "ddpm" else s.steps <= 20) and t.compile is not True)


@fuzz("train")
@given(items=overrides(valid_share=4, min_size=1, max_size=3))
def test_train_overrides(tmp_path_factory, items):
    argv_overrides = CHEAP_TRAINING + items
    try:
        assume(affordable(load_config("tiny", argv_overrides)))
    except UserError:
        pass  # refused: the CLI must refuse it as cheaply
    run = tmp_path_factory.mktemp("train") / "run"
    code, err = run_cli(["train", "tiny", *argv_overrides, "--run-dir", run, "--quiet"])
    if not check_outcome(code, err):
        assert not run.exists(), "a refused train wrote its run directory"


RESUME_SAFE = ["train.steps", "train.lr", "train.device", "train.bf16", "train.log_every", "train.val_every",
               "train.val_batches", "train.sample_every", "train.sample_n", "train.checkpoint_every",
               "train.keep_checkpoints", "data.root", "data.download", "sample.sampler", "sample.steps", "sample.eta",
               "sample.n", "sample.batch_size", "sample.guidance", "diffusion.timesteps", "model.channels", "method"]
RESUME_OVERRIDE = st.sampled_from(["steps", "valid", "valid", "any", "hostile"]).flatmap(lambda kind: {
    "steps": st.integers(3, 6).map(lambda steps: f"train.steps={steps}"),
    "valid": st.sampled_from(RESUME_SAFE).flatmap(lambda key: _small_valid(key, KEYS[key]).map(lambda v: f"{key}={v}")),
    "any": st.sampled_from(RESUME_SAFE).flatmap(lambda key: value_for(key).map(lambda value: f"{key}={value}")),
    "hostile": HOSTILE_OVERRIDE}[kind])


@fuzz("resume")
@given(items=st.lists(RESUME_OVERRIDE, min_size=1, max_size=3))
def test_resume_overrides(short_tiny_run, tmp_path_factory, items):
    config = load_config(str(short_tiny_run / "config.yaml"))
    try:
        assume(affordable(apply_overrides(config, items), steps=6, images=512))
    except UserError:
        pass
    run = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(short_tiny_run, run)
    before = files_of(run)
    code, err = run_cli(["train", "--resume", run, *items, "--quiet"])
    if not check_outcome(code, err):
        assert files_of(run) == before, "a refused resume changed the run directory"


# -- `ddpmlab sample` --------------------------------------------------------------------------------------------
def flag_value(valid: st.SearchStrategy, valid_share: int = 3) -> st.SearchStrategy:
    """A flag's value: from `valid` `valid_share` times in (valid_share + 1), else hostile text, a number or text."""
    hostile = st.one_of(st.sampled_from(BAD_TEXTS), NUMBERS, TEXT)
    return st.sampled_from([True] * valid_share + [False]).flatmap(lambda ok: valid if ok else hostile)


ALL_SPACINGS = sorted({s for record in SAMPLERS.values() for s in record.spacings})
OUT_KINDS = ["grid.png", "arrays.npz", "pngs/", "x.jpg", "noext", "", "existing", "existing/", "a-file/x.png",
             "deep/er/x.png", "x.PNG", ".png", "x.npz/", "a-file"]
SAMPLE_FLAGS = {
    "--n": flag_value(st.integers(1, 4).map(str)),
    "--steps": flag_value(st.integers(1, 5).map(str)),
    "--sampler": flag_value(st.sampled_from(tuple(SAMPLERS))),
    "--spacing": flag_value(st.sampled_from(ALL_SPACINGS)),
    "--eta": flag_value(st.floats(0, 1).map(repr)),
    "--class": flag_value(st.integers(0, 3).map(str)),
    "--guidance": flag_value(st.floats(0, 4).map(repr)),
    "--batch-size": flag_value(st.sampled_from(["1", "2", "3", "8", str(10**12), str(2**63 - 1)])),
    "--seed": flag_value(st.sampled_from(["0", "1", "-1", str(2**63 - 1), str(-2**63)])),
}


def flags_argv(draw, flag_values: dict, max_size: int) -> list:
    """Up to `max_size` distinct flags of `flag_values`, each followed by a value drawn from its strategy."""
    argv = []
    for flag in draw(st.dictionaries(st.sampled_from(sorted(flag_values)), st.just(None), max_size=max_size)):
        argv += [flag, draw(flag_values[flag])]
    return argv


@st.composite
def sample_argv(draw):
    argv = flags_argv(draw, SAMPLE_FLAGS, 5)
    for switch in ("--per-class", "--no-ema"):
        if draw(st.sampled_from([False, False, True])):
            argv.append(switch)
    out = draw(st.one_of(st.sampled_from(["grid.png", "arrays.npz", "pngs/"]), st.sampled_from(OUT_KINDS),
                         st.tuples(TEXT.filter(lambda t: "/" not in t and t not in (".", "..")),
                                   st.sampled_from([".png", ".npz", "/", ""])).map("".join)))
    return argv, out, draw(st.booleans())


def small_n(argv: list[str], most: int = 8) -> bool:
    """False when argv's --n is an integer above `most` (valid, and as many images to draw)."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--n":
            try:
                return int(value) <= most
            except ValueError:
                return True
    return True


def _out_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("out")
    (folder / "existing").mkdir()
    (folder / "a-file").write_text("a file, not a folder")
    return folder


@fuzz("sample")
@given(drawn=sample_argv())
def test_sample_flags(short_tiny_run, conditional_tiny_run, tmp_path_factory, drawn):
    argv, out, conditional = drawn
    run = conditional_tiny_run if conditional else short_tiny_run
    assume(small_n(argv))
    folder = _out_folder(tmp_path_factory)
    before = files_of(run)
    code, err = run_cli(["sample", run, *argv, "--out", os.path.join(folder, out), "--quiet"])
    check_outcome(code, err)
    assert files_of(run) == before, "sample changed the run directory"
    assert (folder / "a-file").read_text() == "a file, not a folder"


# -- `ddpmlab eval` ------------------------------------------------------------------------------------------------
class QuickInception:
    """Stands in for TF-Inception (12 images/s on 2 cores, and FID's 2048×2048 matrix square root): a fixed random
    projection of the pixels to 16 features under Inception's id, so FID, KID and precision/recall run their real
    code on few images, quickly."""

    def __new__(cls, device="cpu", path=None):
        from ddpmlab.eval.features import INCEPTION_ID, ClassifierFeatures

        class Projection(torch.nn.Module):
            feature_dim = 16

            def __init__(self):
                super().__init__()
                self.weight = torch.randn(3 * 16 * 16, 16, generator=torch.Generator().manual_seed(0))

            def features(self, x):
                return x.expand(-1, 3, -1, -1).flatten(1) @ self.weight

        return ClassifierFeatures(Projection(), INCEPTION_ID, device)


@pytest.fixture(scope="module")
def eval_setup(short_tiny_run, tiny_classifier, tmp_path_factory):
    """(a copy of the short tiny run that eval may write into, the classifier), with TF-Inception replaced by
    QuickInception and DDPMLAB_CACHE in a folder of this module."""
    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(short_tiny_run, run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ddpmlab.eval.scores.InceptionFeatures", QuickInception)
        patch.setenv("DDPMLAB_CACHE", str(tmp_path_factory.mktemp("eval-cache")))
        yield run, tiny_classifier


METRIC_NAMES = ["fid", "kid", "pr", "fd", "nll", "speed", "FD", " fd ", "bogus", ""]
SWEEP_TOKENS = ["ddim:2", "ddim:3", "heun:2", "dpm-solver++:3", "ddpm:4", "2", "3", "ddim:0", "ddim:101", "heun:x",
                "nope:2", "", ":", "ddim:", "ddim:-1", f"ddim:{2**70}", "DDIM:2", " ddim : 2 "]
EVAL_FLAGS = {
    "--n": flag_value(st.integers(1, 4).map(str)),
    "--metrics": st.one_of(st.lists(st.sampled_from(METRIC_NAMES), min_size=1, max_size=4).map(",".join),
                           st.sampled_from(BAD_TEXTS), TEXT),
    "--sweep": st.one_of(st.lists(st.sampled_from(SWEEP_TOKENS), min_size=1, max_size=4).map(",".join),
                         st.sampled_from(BAD_TEXTS), TEXT),
    "--batch-size": flag_value(st.sampled_from(["1", "2", "4", "8", str(10**12), str(2**63 - 1)])),
}


@st.composite
def eval_argv(draw):
    return flags_argv(draw, EVAL_FLAGS, 4)


@fuzz("eval")
@given(argv=eval_argv())
def test_eval_flags(eval_setup, argv):
    run, classifier = eval_setup
    assume(small_n(argv))
    if "--n" not in argv:
        argv = ["--n", "3", *argv]  # the default, 10000 samples, is no test's to draw
    before, listed = files_of(run), (run / MANIFEST_FILE).read_text()  # the list of what ddpmlab wrote: appended to
    code, err = run_cli(["eval", run, *argv, "--classifier", classifier, "--steps", "2", "--nll-n", "2",
                         "--nll-timesteps", "2", "--speed-repeats", "1", "--ref-n", "8", "--device", "cpu", "--quiet"])
    if check_outcome(code, err):  # it may rewrite its own results and samples (eval/), nothing else
        before = {k: v for k, v in before.items() if not k.startswith("eval/")}
    after = {k: v for k, v in files_of(run).items() if k in before}
    before.pop(MANIFEST_FILE), after.pop(MANIFEST_FILE)
    assert (run / MANIFEST_FILE).read_text().startswith(listed), "eval rewrote the list of what ddpmlab wrote"
    assert after == before, "eval changed files of the run it measured"
