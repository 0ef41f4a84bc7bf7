"""The command line end to end: train, interrupt, resume, sample; every user mistake is `error:` + exit 2."""

import re
import signal
import subprocess
import sys
import time

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
    assert not (run / ".lock").exists()  # released on the way out
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
    _expect_user_error(capsys, ["sample", broken, "--out", tmp_path / "x.png"],
                       f"{newest / 'ema.safetensors'}: damaged (truncated), 70 bytes where")
    (newest / "checksums.json").unlink()  # as checkpoints were written before checksums: the file's own checks
    _expect_user_error(capsys, ["sample", broken, "--out", tmp_path / "x.png"], "not a readable safetensors file")
    (newest / "model.safetensors").write_bytes(b"garbage")
    _expect_user_error(capsys, ["train", "--resume", broken], "not a readable safetensors file")
    import torch
    from safetensors.torch import save_file

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


# -- what a new user hit first (issue 9) ------------------------------------------------------------------
def test_a_named_weights_file_is_the_one_sampled(trained, tmp_path):
    checkpoint = sorted((trained / "checkpoints").iterdir())[-1]
    outs = {}
    for name, source, extra in (("file", checkpoint / "model.safetensors", []), ("raw", trained, ["--no-ema"]),
                                ("ema", trained, [])):
        assert main(["sample", str(source), "--n", "4", "--out", str(tmp_path / f"{name}.npz"), "--quiet", *extra]) == 0
        outs[name] = np.load(tmp_path / f"{name}.npz")["images"]
    assert np.array_equal(outs["file"], outs["raw"]) and not np.array_equal(outs["file"], outs["ema"])


def test_sample_defaults_come_from_the_run_and_folders_get_one_png_per_image(trained, tmp_path, capsys):
    assert main(["sample", str(trained), "--out", str(tmp_path / "a.npz"), "--quiet"]) == 0
    assert np.load(tmp_path / "a.npz")["images"].shape[0] == 16  # tiny's sample.n
    assert "ddim, 10 steps" in capsys.readouterr().out  # tiny's sample.sampler and sample.steps
    assert main(["sample", str(trained), "--n", "5", "--out", str(tmp_path / "pngs") + "/", "--quiet"]) == 0
    from PIL import Image

    files = sorted((tmp_path / "pngs").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f.name for f in files] + ["ddpmlab-files.txt"]
    assert Image.open(files[0]).size == (16, 16)


@pytest.mark.parametrize("extra,fragment", [
    (["--steps", "0"], "steps=0 must be an integer in 1..100"),
    (["--steps", "101"], "steps=101 must be an integer in 1..100"),
    (["--sampler", "ddpm", "--steps", "0"], "ddpm steps=0 must be an integer in 1..100"),
    (["--sampler", "ddpm", "--eta", "0.5"], "--eta applies to --sampler ddim only"),
    (["--sampler", "heun", "--eta", "0.5"], "--eta applies to --sampler ddim only"),
    (["--sampler", "ddim", "--variance", "beta"], "--variance applies to --sampler ddpm only"),
    (["--sampler", "ddim", "--spacing", "karras"], "ddim spacing 'karras' is not one of"),
    (["--guidance", "nan"], "--guidance must be a finite number >= 0"),
    (["--guidance", "inf"], "--guidance must be a finite number >= 0"),
    (["--guidance", "-1"], "--guidance must be a finite number >= 0"),
])
def test_sampler_flags_that_cannot_be_honoured_are_errors(capsys, trained, tmp_path, extra, fragment):
    _expect_user_error(capsys, ["sample", trained, "--out", tmp_path / "x.png", *extra], fragment)
    assert not (tmp_path / "x.png").exists()


def test_unwritable_outputs_are_refused_before_any_compute(capsys, trained, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    _expect_user_error(capsys, ["sample", trained, "--out", tmp_path / "file" / "x.png"], "which is a file")
    _expect_user_error(capsys, ["sample", trained, "--out", "/proc/ddpmlab-test.png"], "cannot write in /proc")
    _expect_user_error(capsys, ["sample", trained, "--out", tmp_path / "folder"], "is an existing folder")
    _expect_user_error(capsys, ["train", "tiny", "--run-dir", tmp_path / "file" / "run"], "which is a file")
    _expect_user_error(capsys, ["eval", "train-classifier", "synthetic", "--out", "/proc/c.safetensors"],
                       "cannot write in /proc")
    assert (tmp_path / "file").read_text() == "x"


def test_resume_flag_combinations(capsys, trained):
    _expect_user_error(capsys, ["train", "tiny", "--resume", trained], "CONFIG and --resume are exclusive")
    _expect_user_error(capsys, ["train", "--resume", trained, "--run-dir", "x"], "--run-dir and --force do not apply")
    _expect_user_error(capsys, ["train", "--resume", trained, "--force"], "--run-dir and --force do not apply")
    _expect_user_error(capsys, ["train", "--resume", trained, "train.steps=10"], "below the run's step 40")
    _expect_user_error(capsys, ["train", "--resume", trained, "diffusion.prediction=v"], "cannot change diffusion.prediction")


def test_cuda_without_a_gpu_names_the_config_key(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: train.device=cuda is valid here")
    _expect_user_error(capsys, ["train", "tiny", "train.device=cuda", "--run-dir", tmp_path / "r"], "set train.device=cpu")
    assert not (tmp_path / "r").exists()


def test_train_says_what_it_trains_before_the_bar(tmp_path):
    result = run_cli("train", "tiny", "train.steps=2", "--run-dir", tmp_path / "r", "--quiet")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "device cpu" in first and "parameters" in first and "461 training images (3×16×16)" in first


def test_sigint_saves_logs_the_partial_window_and_exits_130(tmp_path):
    from ddpmlab.store.metrics_csv import read_metrics

    run = tmp_path / "run"
    process = subprocess.Popen([*CLI, "train", "tiny", "train.log_every=1000", "train.val_every=1000",
                                "train.checkpoint_every=1000", "train.sample_every=1000", "train.steps=1000",
                                "--run-dir", str(run), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "run.log").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # some steps, and no log line yet (log_every=1000)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped_at = int(out.split("interrupted at step ")[1].split()[0])
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == [stopped_at] and rows[0]["loss"] > 0  # the window before the signal
    assert (run / "checkpoints" / f"step_{stopped_at:07d}").is_dir()


@pytest.mark.parametrize("sampler,steps,spacing,nfe", [("ddpm", 7, "linspace", 7), ("ddim", 4, "trailing", 4),
                                                        ("dpm-solver++", 5, "time-quadratic", 5), ("heun", 3, "karras", 5)])
def test_every_sampler_runs_from_the_cli_and_its_labels_tell_the_truth(trained, tmp_path, capsys, sampler, steps,
                                                                       spacing, nfe):
    out = tmp_path / "s.npz"
    argv = ["sample", str(trained), "--sampler", sampler, "--steps", str(steps), "--n", "3", "--out", str(out), "--quiet"]
    assert main(argv + (["--spacing", spacing] if sampler == "ddim" else [])) == 0
    assert f"({sampler}, {steps} steps, {spacing} spacing, {nfe} network evaluations" in capsys.readouterr().out
    import json

    with np.load(out) as saved:
        settings = json.loads(str(saved["settings"]))
        assert saved["images"].shape == (3, 16, 16, 3)
    assert (settings["sampler"], settings["steps"], settings["spacing"], settings["nfe"]) == (sampler, steps, spacing, nfe)


# -- hostile input (issue 13): every mistake one line ----------------------------------------------------------
@pytest.mark.parametrize("argv,line", [
    (["sample", "run", "--n", "abc", "--out", "x.png"],
     "error: argument --n: 'abc' is not an integer (see ddpmlab sample --help)"),
    (["sample", "run", "--seed", str(2**64), "--out", "x.png"],
     f"error: argument --seed: {2**64} is not an integer in -2**63..2**63-1 (see ddpmlab sample --help)"),
    (["sample", "run"], "error: the following arguments are required: --out (see ddpmlab sample --help)"),
    (["eval", "real", "synthetic", "--n", "1.5"],
     "error: argument --n: '1.5' is not an integer (see ddpmlab eval real --help)"),
    (["frobnicate"], "error: argument command: invalid choice: 'frobnicate' (choose from .*train.*bench.*) "
                     "(see ddpmlab --help)"),  # Python 3.12 quotes the choices
])
def test_flags_argparse_cannot_read_are_one_line_errors(capsys, argv, line):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    pattern = re.escape(line).replace(r"\.\*", ".*") + "\n"
    assert exit_.value.code == 2 and re.fullmatch(pattern, capsys.readouterr().err)


def test_an_error_naming_a_path_with_a_line_break_stays_one_line(capsys, tmp_path):
    # every boundary str.splitlines knows: a shell passes any of them in an argument
    _expect_user_error(capsys, ["train", str(tmp_path / "two\nlines\x1eor\u2028more.yaml")],
                       "two\\nlines\\x1eor\\u2028more.yaml")


def test_out_of_memory_is_one_line_and_other_runtime_errors_stay_bugs(capsys):
    from ddpmlab.cli import _handle

    def allocate(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3072000000000000 bytes. Error code 12 (Cannot allocate memory)")

    assert _handle(allocate, None) == 2
    assert capsys.readouterr().err == ("error: out of memory (tried to allocate 3072000000000000 bytes); use a smaller "
                                       "--batch-size or --n, or train.batch_size and the model's size\n")

    def bug(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        _handle(bug, None)


def test_library_warnings_and_notes_are_shown_by_the_cli_as_one_line_each_once_per_command(monkeypatch, capsys):
    import warnings

    from ddpmlab.commands import config as config_command
    from ddpmlab.errors import DdpmlabNote, DdpmlabWarning

    def warn_then_show(args):
        for _ in range(3):  # the same warning from the same place: shown once
            warnings.warn("skipped 2 images\nof 9", DdpmlabWarning, stacklevel=1)
        warnings.warn("took over a stale lock", DdpmlabNote, stacklevel=1)
        return 0

    monkeypatch.setattr(config_command, "presets", warn_then_show)
    for _ in range(2):  # and again in the next command of the same process
        assert main(["presets"]) == 0
        assert capsys.readouterr().err.splitlines() == ["warning: skipped 2 images\\nof 9", "note: took over a stale lock"]


def test_the_readmes_second_method_on_a_preset_trains_into_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quick = ["train.steps=1", "train.sample_every=1000", "train.val_every=1000", "--quiet"]
    assert main(["train", "tiny", *quick]) == 0
    assert main(["train", "tiny", "method=dcgan", *quick]) == 0, capsys.readouterr().err
    assert "method: dcgan" in (tmp_path / "runs" / "tiny-dcgan" / "config.yaml").read_text()
    assert "method: ddpm" in (tmp_path / "runs" / "tiny" / "config.yaml").read_text()


@pytest.mark.parametrize("argv,folder", [(["tiny"], "runs/tiny"), (["tiny", "method=ddpm"], "runs/tiny"),
                                         (["fashion-mnist-vae"], "runs/fashion-mnist-vae"),
                                         (["fashion-mnist-vae", "method=ddpm"], "runs/fashion-mnist-vae-ddpm")])
def test_the_default_run_folder_names_a_method_the_config_does_not_declare(argv, folder):
    from ddpmlab.commands.train import default_run_dir
    from ddpmlab.config import load_config

    assert default_run_dir(argv[0], load_config(argv[0], argv[1:])).as_posix() == folder
