"""Config values as users write them: numbers in every notation, explicit and scaled β ranges, resume guards."""

import subprocess
import sys

import pytest

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.config import Config, load_config, preset_names, resume_changes
from ddpmlab.errors import UserError
from ddpmlab.train.build import build_schedule


@pytest.mark.parametrize("text,value", [("1e-3", 1e-3), ("2E-4", 2e-4), ("1e2", 100.0), ("0.5", 0.5), ("3", 3.0),
                                        (".5", 0.5), ("+1e-3", 1e-3)])
def test_numbers_in_any_notation_are_numbers(text, value):
    assert load_config("tiny", [f"train.lr={text}"]).train.lr == pytest.approx(value)


def test_scientific_integers_and_yaml_files(tmp_path):
    assert load_config("tiny", ["train.steps=1e2"]).train.steps == 100
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: synthetic}\ntrain:\n  lr: 2e-4\n  steps: 1E3\n")  # YAML 1.1 reads both as strings
    config = load_config(str(path))
    assert config.train.lr == 2e-4 and config.train.steps == 1000


@pytest.mark.parametrize("override,fragment", [("train.lr=nan", "number"), ("train.lr=.nan", "finite"), ("train.lr=.inf", "finite"),
                                               ("train.steps=1.5e0", "integer"), ("train.lr=1e-3x", "number")])
def test_non_numbers_and_non_finite_values_are_refused(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config("tiny", [override])


def test_linear_betas_follow_T_unless_given():
    scaled = build_schedule(load_config("tiny").diffusion)  # T=100
    assert scaled.betas[0].item() == pytest.approx(1e-3) and scaled.betas[-1].item() == pytest.approx(0.2)
    explicit = build_schedule(load_config("tiny", ["diffusion.beta_start=1e-4", "diffusion.beta_end=0.02"]).diffusion)
    assert explicit.betas[-1].item() == pytest.approx(0.02) and explicit.final_alpha_cumprod > 0.3
    with pytest.raises(UserError, match="beta_start"):
        load_config("tiny", ["diffusion.beta_start=0.5", "diffusion.beta_end=0.1"])


def test_cifar10_linear_t300_preset_reproduces_the_published_unscaled_setup():
    config = load_config("cifar10-linear-t300")
    schedule = build_schedule(config.diffusion)
    assert (config.diffusion.timesteps, config.diffusion.beta_start, config.diffusion.beta_end) == (300, 1e-4, 0.02)
    assert schedule.final_alpha_cumprod == pytest.approx(0.0477, abs=1e-3)  # why its FID is poor


def test_resume_refuses_changes_that_define_the_model_or_process():
    saved = load_config("tiny")
    for override, key in [("diffusion.prediction=v", "diffusion.prediction"), ("diffusion.timesteps=50", "diffusion.timesteps"),
                          ("diffusion.schedule=cosine", "diffusion.schedule"), ("model.channels=32", "model.channels"),
                          ("data.synthetic_size=32", "data.synthetic_size"), ("train.batch_size=8", "train.batch_size")]:
        with pytest.raises(UserError, match=key):
            resume_changes(saved, load_config("tiny", [override]), step=10)
    for override in ("train.steps=100", "train.lr=1e-4", "train.log_every=1", "train.device=cpu", "sample.steps=5",
                     "train.checkpoint_every=3", "train.keep_checkpoints=1"):
        resume_changes(saved, load_config("tiny", [override]), step=10)
    with pytest.raises(UserError, match="below the run's step 40"):
        resume_changes(saved, load_config("tiny", ["train.steps=10"]), step=40)


def test_presets_command_lists_every_preset_with_a_description(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # a description beside each name
    assert "cifar10-linear-t300" in preset_names()


def test_config_command_prints_the_resolved_config(capsys):
    import yaml

    assert main(["config", "tiny", "train.lr=1e-3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 1e-3 and printed["diffusion"]["timesteps"] == 100
    assert set(printed) == set(Config.__dataclass_fields__)


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "ddpmlab", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"ddpmlab {ddpmlab.__version__}"
    result = subprocess.run([sys.executable, "-m", "ddpmlab", "presets"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "tiny" in result.stdout
