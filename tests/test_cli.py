"""The command line end to end: train, interrupt, resume, sample; every user mistake is `error:` + exit 2."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ddpmlab.cli import main

CLI = [sys.executable, "-m", "ddpmlab.cli"]


def run_cli(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained straight through to 40 steps."""
    run = tmp_path_factory.mktemp("cli") / "straight"
    result = run_cli("train", "tiny", "--run-dir", run, "--quiet")
    assert result.returncode == 0, result.stderr
    return run


def test_sigterm_then_resume_samples_the_same_images(trained, tmp_path):
    run = tmp_path / "interrupted"
    process = subprocess.Popen([*CLI, "train", "tiny", "--run-dir", str(run), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the loop runs (the first metrics row), then stop it
        metrics = run / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err  # saved and stopped, but not a finished run
    assert "interrupted at step" in out and "Traceback" not in err
    stopped_at = int(out.split("interrupted at step ")[1].split()[0])
    assert 5 <= stopped_at < 40

    resumed = run_cli("train", "--resume", run, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished at step 40" in resumed.stdout

    for source, name in ((trained, "a.npz"), (run, "b.npz")):
        result = run_cli("sample", source, "--n", 6, "--seed", 3, "--out", tmp_path / name, "--quiet")
        assert result.returncode == 0, result.stderr
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["images"].shape == (6, 16, 16, 3) and a["images"].dtype == np.uint8
    assert np.array_equal(a["images"], b["images"])
    assert a["images"].std() > 0  # trained 40 steps: not a blank output


def test_sample_png_and_seeds(trained, tmp_path):
    assert main(["sample", str(trained), "--n", "4", "--out", str(tmp_path / "g.png"), "--quiet",
                 "--sampler", "ddim", "--steps", "5"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 100
    outs = []
    for seed in (1, 1, 2):
        path = tmp_path / f"s{len(outs)}.npz"
        assert main(["sample", str(trained), "--n", "3", "--seed", str(seed), "--sampler", "ddpm",
                     "--out", str(path), "--quiet"]) == 0
        outs.append(np.load(path)["images"])
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def _expect_user_error(capsys, argv, fragment):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert fragment in err, err


@pytest.mark.parametrize("argv,fragment", [
    (["train", "no-such-preset"], "unknown preset"),
    (["train", "missing.yaml"], "config file not found"),
    (["train", "tiny", "train.nosuchkey=1"], "unknown key train.nosuchkey"),
    (["train", "tiny", "data.name=imagenet"], "data.name"),
    (["train", "tiny", "diffusion.schedule=quadratic"], "diffusion.schedule"),
    (["train", "tiny", "diffusion.timesteps=0"], "diffusion.timesteps"),
    (["train", "tiny", "train.batch_size=-4"], "train.batch_size"),
    (["train", "tiny", "train.lr=fast"], "train.lr"),
    (["train", "tiny", "data.name=sprites", "data.path=/nonexistent/sprites.npy"], "/nonexistent/sprites.npy"),
    (["train", "--resume", "/nonexistent/run"], "not a ddpmlab run directory"),
    (["sample", "/nonexistent/run", "--out", "x.png"], "no such run directory"),
])
def test_user_mistakes_are_one_line_errors(capsys, tmp_path, argv, fragment):
    _expect_user_error(capsys, [*argv, "--run-dir", tmp_path / "r"] if argv[0] == "train" and argv[1] != "--resume"
                       else argv, fragment)
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_not_touched_without_force(capsys, trained):
    before = {p: p.stat().st_mtime_ns for p in trained.rglob("*")}
    _expect_user_error(capsys, ["train", "tiny", "--run-dir", trained], "already exists")
    assert {p: p.stat().st_mtime_ns for p in trained.rglob("*")} == before


def test_corrupt_and_foreign_checkpoints(capsys, trained, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    newest = sorted((broken / "checkpoints").iterdir())[-1]
    (newest / "ema.safetensors").write_bytes(b"garbage" * 10)
    _expect_user_error(capsys, ["sample", broken, "--out", tmp_path / "x.png"], "not a readable safetensors file")
    (newest / "model.safetensors").write_bytes(b"garbage")
    _expect_user_error(capsys, ["train", "--resume", broken], "not a readable safetensors file")
    from safetensors.torch import save_file
    import torch

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_file({"w": torch.zeros(2)}, foreign / "ema.safetensors")
    _expect_user_error(capsys, ["sample", foreign / "ema.safetensors", "--out", tmp_path / "x.png"], "not a ddpmlab checkpoint")
    _expect_user_error(capsys, ["sample", trained, "--out", tmp_path / "x.jpg"], "--out must end in")
    _expect_user_error(capsys, ["sample", trained, "--out", tmp_path / "x.png", "--class", "1"], "class-conditional")


def test_no_traceback_from_the_real_entry_point(tmp_path):
    result = run_cli("train", "tiny", "diffusion.timesteps=0", "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
