"""`ddpmlab compare` end to end on a tiny suite: a row per model, reuse of trained runs, resume, user errors, and
the HTML report as a headless Chromium renders it."""

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from ddpmlab.cli import main
from ddpmlab.commands.compare import check_same_reference, plan_run
from ddpmlab.commands.suite import load_suite, suite_names
from ddpmlab.config import load_config
from ddpmlab.store.manifest import MANIFEST_FILE, recorded
from ddpmlab.train import Trainer

TINY_DDPM = ["train.steps=10"]
TINY_VAE = ["method=vae", "train.steps=10"]


def write_suite(path: Path, runs: list[dict], classifier: Path, **settings) -> Path:
    suite = {"n": 16, "metrics": "fd", "seed": 0, "ref_n": 64, "classifier": str(classifier), **settings, "runs": runs}
    path.write_text(yaml.safe_dump(suite))
    return path


def checkpoint_times(runs_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(runs_dir)): p.stat().st_mtime_ns for p in runs_dir.glob("*/checkpoints/*/*")}


@pytest.fixture(scope="module")
def compared(tmp_path_factory, synthetic_classifier, report_cache):
    """A tiny suite (a 10-step DDPM with a DDIM sweep, a 10-step VAE) compared once: (suite, runs, report, stdout)."""
    folder = tmp_path_factory.mktemp("compare")
    suite = write_suite(folder / "tiny-suite.yaml", [{"name": "ddpm", "config": "tiny", "overrides": TINY_DDPM},
                                                      {"name": "vae", "config": "tiny", "overrides": TINY_VAE}],
                        synthetic_classifier, sweep="ddim:5,10")
    runs, report = folder / "runs", folder / "report"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDPMLAB_CACHE", str(report_cache))
        code = main(["compare", str(suite), "--runs-dir", str(runs), "--out", str(report), "--quiet"])
    assert code == 0
    return suite, runs, report


def test_report_has_a_row_per_model_with_the_same_measurements(compared):
    _, runs, report = compared
    assert {"results.json", "report.md", "index.html", "figures"} <= recorded(report)  # what a rerun may replace
    results = json.loads((report / "results.json").read_text())
    rows = {row["name"]: row for row in results["rows"]}
    assert list(rows) == ["ddpm", "vae"]
    assert rows["ddpm"]["method"] == "ddpm" and rows["vae"]["method"] == "vae"
    for row in rows.values():
        assert row["step"] == 10 and row["n"] == 16
        assert math.isfinite(row["metrics"]["fd_classifier"]) and row["metrics"]["fd_classifier"] >= 0
        assert row["seconds_per_1000"] > 0 and row["parameters"] > 1000
        assert row["training"]["train_steps"] == 10 and row["training"]["train_wall_s"] > 0
        assert isinstance(row["training"]["train_cpu_shared"], bool)  # the training's load was logged
        assert row["stability"]["verdict"] in ("stable", "moderate", "unstable")
        assert Path(row["samples_npz"]).is_file()
    assert rows["ddpm"]["sampler"] == "ddim 50 steps (50 NFE)" and rows["vae"]["sampler"] == "one pass"
    # the same reference statistics behind both FDs: the second model's read from the cache the first one used
    (extractor, first), = rows["ddpm"]["reference"].items()
    second = rows["vae"]["reference"][extractor]
    # (the first may itself come from the session's cache, when other tests computed it before)
    assert (first["path"], first["count"]) == (second["path"], 51) and second["cached"]
    assert [p["steps"] for p in rows["ddpm"]["sweep"]["points"]] == [5, 10] and "sweep" not in rows["vae"]
    markdown = (report / "report.md").read_text()
    assert [row[:2] for row in markdown_table(markdown, "| model | method |")] == [["ddpm", "ddpm"], ["vae", "vae"]]
    assert [row[:2] for row in markdown_table(markdown, "| model | loss |")] == [["ddpm", "loss"], ["vae", "loss"]]
    assert "FD (n=16)" in markdown
    for figure in ("loss-diffusion.png", "loss-vae.png", "samples-ddpm.png", "samples-vae.png",
                   "progress-ddpm-step_0000010.png", "sweep-ddpm.png"):
        assert f"](figures/{figure})" in markdown and (report / "figures" / figure).stat().st_size > 0
    assert rows["ddpm"]["samples_npz"] in markdown  # every figure can be recomputed from the listed files


def markdown_table(markdown: str, header_start: str) -> list[list[str]]:
    """The body rows, as cells, of the markdown table whose header line starts with `header_start`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start)) + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[start:end]]


def test_html_is_self_contained(compared):
    page = (compared[2] / "index.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count("<tr>") == 1 + 2 + 1 + 2  # results: header + 2 rows; stability: header + 2 losses


def test_second_invocation_reuses_the_trained_runs(compared, capsys):
    suite, runs, report = compared
    before = checkpoint_times(runs)
    assert len(before) > 0
    sweep = runs / "ddpm" / "eval" / "sweep-step_0000010-n16-seed0.json"
    sweep_written = sweep.stat().st_mtime_ns
    code = main(["compare", str(suite), "--runs-dir", str(runs), "--out", str(report), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("reusing") == 2 and "training" not in out
    assert checkpoint_times(runs) == before
    assert sweep.stat().st_mtime_ns == sweep_written  # the sweep too, with the first run's timings
    results = json.loads((report / "results.json").read_text())
    assert [row["name"] for row in results["rows"]] == ["ddpm", "vae"]


def test_a_saved_sweep_is_reused_only_for_the_same_weights(tmp_path):
    from ddpmlab.commands.compare import saved_sweep

    samples = tmp_path / "sweep-n16-seed0-ddim5-leading.npz"
    samples.write_bytes(b"x")
    (tmp_path / "sweep-n16-seed0.png").write_bytes(b"x")
    path = tmp_path / "sweep-n16-seed0.json"
    path.write_text(json.dumps({"checkpoint_step": 10, "weights": "ema", "weights_digest": "0123abcd",
                                "points": [{"sampler": "ddim", "steps": 5, "samples": str(samples)}],
                                "metric_keys": ["fd_classifier"], "extractors": {"fd_classifier": "c"}}))
    args = ([("ddim", 5)], ["fd_classifier"], {"fd_classifier": "c"})
    assert saved_sweep(path, 10, "0123abcd", *args)["plot"] == str(tmp_path / "sweep-n16-seed0.png")
    assert saved_sweep(path, 10, "ffffffff", *args) is None  # retrained to the same step: other weights
    assert saved_sweep(path, 11, "0123abcd", *args) is None
    samples.unlink()
    assert saved_sweep(path, 10, "0123abcd", *args) is None


def test_an_unfinished_run_is_resumed_to_the_suites_steps(tmp_path, synthetic_classifier, capsys):
    runs = tmp_path / "runs"
    Trainer(load_config("tiny", TINY_VAE), runs / "vae", progress=False).train()  # 10 of the suite's 20 steps
    suite = write_suite(tmp_path / "s.yaml", [{"name": "vae", "config": "tiny", "overrides": ["method=vae",
                                                                                             "train.steps=20"]}],
                        synthetic_classifier)
    code = main(["compare", str(suite), "--runs-dir", str(runs), "--out", str(tmp_path / "report"), "--quiet"])
    assert code == 0
    assert "resuming" in capsys.readouterr().out
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["rows"][0]["step"] == 20 and results["rows"][0]["training"]["train_steps"] == 20
    assert (runs / "vae" / "checkpoints" / "step_0000020").is_dir()


def test_ctrl_c_while_compare_trains_exits_130_like_train(tmp_path, synthetic_classifier, capsys, monkeypatch):
    import signal

    def stopped(trainer):  # what Trainer.train returns after Ctrl-C: saved, stopped early
        return {"step": 3, "interrupted": True, "signal": signal.SIGINT, "wall_s": 1.0, "run_dir": str(trainer.run_dir)}

    monkeypatch.setattr(Trainer, "train", stopped)
    suite = write_suite(tmp_path / "s.yaml", [{"name": "d", "config": "tiny", "overrides": TINY_DDPM}],
                        synthetic_classifier)
    code = main(["compare", str(suite), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "training of d was interrupted at step 3" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(Trainer, "train", lambda trainer: {**stopped(trainer), "signal": signal.SIGTERM})
    assert main(["compare", str(suite), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 128 + signal.SIGTERM


def errors(capsys, *argv) -> str:
    code = main(["compare", *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    return err


def test_user_errors_are_one_line_and_exit_2_before_any_work(tmp_path, capsys, synthetic_classifier):
    report = tmp_path / "report"
    assert "unknown suite 'no-such-suite'" in errors(capsys, "no-such-suite", "--out", report)
    missing = write_suite(tmp_path / "missing.yaml", [{"name": "old", "run": str(tmp_path / "absent")}],
                          synthetic_classifier)
    assert "not a run directory" in errors(capsys, missing, "--out", report)
    unknown = write_suite(tmp_path / "unknown.yaml", [{"name": "x", "config": "no-such-preset"}], synthetic_classifier)
    assert "suite run x: unknown preset 'no-such-preset'" in errors(capsys, unknown, "--out", report)
    assert not report.exists() and not (Path.cwd() / "runs" / "compare" / "x").exists()

    good = write_suite(tmp_path / "good.yaml", [{"name": "d", "config": "tiny", "overrides": TINY_DDPM}],
                       synthetic_classifier)
    a_file = tmp_path / "report.txt"
    a_file.write_text("keep me")
    assert "is a file" in errors(capsys, good, "--out", a_file, "--runs-dir", tmp_path / "runs")
    assert a_file.read_text() == "keep me" and not (tmp_path / "runs").exists()

    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("runs: [{name: a, config: tiny}]\nsamples: 3\n")
    assert "unknown suite key 'samples'" in errors(capsys, bad_key)

    # FD of a model measured against other held-out images than its neighbour's is not comparable
    mixed = write_suite(tmp_path / "mixed.yaml", [
        {"name": "a", "config": "tiny", "overrides": TINY_DDPM},
        {"name": "b", "config": "tiny", "overrides": [*TINY_VAE, "data.val_fraction=0.2"]}], synthetic_classifier)
    assert "suite runs a and b are measured against different held-out images" in errors(
        capsys, mixed, "--out", report, "--runs-dir", tmp_path / "runs")
    no_held_out = write_suite(tmp_path / "none.yaml", [
        {"name": "gan", "config": "tiny", "overrides": ["method=dcgan", "data.val_fraction=0"]}], synthetic_classifier)
    assert "no held-out images" in errors(capsys, no_held_out, "--out", report, "--runs-dir", tmp_path / "runs")
    assert not report.exists() and not (tmp_path / "runs").exists()

    # a report goes into a new or empty folder, or replaces an earlier report: never over a user's files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    assert "holds files that are not a ddpmlab report" in errors(capsys, good, "--out", mine, "--runs-dir",
                                                                 tmp_path / "runs")
    (mine / MANIFEST_FILE).write_text("# the files ddpmlab wrote\nreport.md\n")  # an earlier report without index.html
    assert "index.html was not written by ddpmlab" in errors(capsys, good, "--out", mine, "--runs-dir",
                                                             tmp_path / "runs")
    assert (mine / "index.html").read_text() == "my page" and not (tmp_path / "runs").exists()


def test_shipped_suites_load_and_name_known_presets(tmp_path):
    assert suite_names() == ["cifar10", "cpu-demo", "fashion-mnist"]
    for name, reference in (("cifar10", "cifar10 test"), ("cpu-demo", "fashion-mnist test"),
                            ("fashion-mnist", "fashion-mnist test")):
        plans = [plan_run(entry, tmp_path / "runs") for entry in load_suite(name).runs]
        assert {plan.action for plan in plans} == {"train"}
        assert check_same_reference(plans) == reference
    cpu_demo = load_suite("cpu-demo")
    assert cpu_demo.n == 500 and [load_config(r.config, r.overrides).method for r in cpu_demo.runs] == [
        "ddpm", "ddpm", "vae", "dcgan", "vaegan", "ldm"]
    linear = load_config(cpu_demo.runs[1].config, cpu_demo.runs[1].overrides).diffusion
    assert (linear.timesteps, linear.beta_start, linear.beta_end) == (300, 1e-4, 0.02)


# -- the page in a real browser -------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium is not installed (scripts/test.sh installs Debian's package where apt works)")
def test_index_html_renders_every_row_and_image_in_headless_chromium(compared, tmp_path):
    page = (compared[2] / "index.html").resolve()
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = json.loads(html_unescape(re.search(r'<pre id="selfcheck"[^>]*>(.*?)</pre>', dom.stdout, re.S).group(1)))
    assert check["rows"] == 2 and check["hook_shown"] is False  # the test hook is not part of what a reader sees
    assert len(check["images"]) == 6
    assert all(image["loaded"] and image["width"] > 0 for image in check["images"]), check["images"]

    screenshot = tmp_path / "report.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1400,2000", "--hide-scrollbars", page.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    import numpy as np
    from PIL import Image

    with Image.open(screenshot) as picture:
        assert picture.size == (1400, 2000)
        assert len(np.unique(np.asarray(picture.convert("L")))) > 10  # drawn, not a blank page


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
