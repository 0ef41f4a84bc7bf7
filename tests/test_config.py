"""Config values as users write them: numbers in every notation, explicit and scaled β ranges, resume guards."""

import math
import re
import subprocess
import sys

import pytest

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.config import Config, load_config, preset_description, preset_names, resume_changes
from ddpmlab.errors import UserError
from ddpmlab.methods.ddpm import build_schedule


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


# -- methods (issue 10) ----------------------------------------------------------------------------------------
def test_method_is_a_top_level_key_in_overrides_and_yaml(tmp_path):
    assert load_config("tiny").method == "ddpm"
    assert load_config("tiny", ["method=dcgan"]).method == "dcgan"
    path = tmp_path / "c.yaml"
    path.write_text("method: vae\ndata: {name: synthetic}\nvae:\n  latent_dim: 32\n  lr: 5e-4\n")
    config = load_config(str(path))
    assert (config.method, config.vae.latent_dim, config.vae.lr) == ("vae", 32, 5e-4)
    # the DDPM keys of a preset stay where they are, unused by a baseline
    assert load_config("fashion-mnist", ["method=vae"]).model.channels == 64


@pytest.mark.parametrize("overrides,fragment", [
    (["vae.latent_dim=8"], "vae.latent_dim applies to method=vae, but this config has method=ddpm"),
    (["method=vae", "dcgan.beta1=0.9"], "dcgan.beta1 applies to method=dcgan, but this config has method=vae"),
    (["method=gan"], "invalid config value method: 'gan' is not one of ddpm, vae, dcgan, vaegan"),
    (["method=dcgan", "model.conditional=true"], "method=dcgan is unconditional"),
    (["method=vaegan", "vaegan.reconstruction=perceptual"], "vaegan.reconstruction"),
    (["method=vae", "vae.decoder_std=0"], "vae.decoder_std"),
    (["method=dcgan", "dcgan.beta1=1"], "dcgan.beta1"),
    (["methods=vae"], "must look like section.key=value"),
])
def test_method_mistakes_name_the_key(overrides, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        load_config("tiny", overrides)


def test_resume_refuses_a_change_of_method_or_network_but_not_of_learning_rate():
    saved = load_config("tiny", ["method=vae"])
    for override, key in [("method=dcgan", "cannot change method"), ("vae.latent_dim=64", "vae.latent_dim"),
                          ("vae.kl_weight=0.5", "vae.kl_weight"), ("vae.beta1=0.5", "vae.beta1"),
                          ("train.adam_beta2=0.95", "train.adam_beta2")]:
        with pytest.raises(UserError, match=key):
            resume_changes(saved, load_config("tiny", ["method=vae", override] if "." in override else [override]), 10)
    resume_changes(saved, load_config("tiny", ["method=vae", "vae.lr=1e-4"]), step=10)


@pytest.mark.parametrize("name,method,images,epochs", [
    ("cifar10-vae", "vae", 50_000, 100), ("cifar10-dcgan", "dcgan", 50_000, 100), ("cifar10-vaegan", "vaegan", 50_000, 200),
    ("fashion-mnist-vae", "vae", 60_000, 100), ("fashion-mnist-dcgan", "dcgan", 60_000, 100),
    ("fashion-mnist-vaegan", "vaegan", 60_000, 200)])
def test_baseline_presets_train_the_published_epochs(name, method, images, epochs):
    config = load_config(name)
    assert config.method == method and config.train.batch_size == 128
    assert config.train.steps == epochs * math.ceil(images / 128)  # 39,100 and 78,200 on CIFAR-10
    lr, beta1 = {"vae": (1e-3, 0.9), "dcgan": (2e-4, 0.5), "vaegan": (2e-4, 0.5)}[method]
    assert (getattr(config, method).lr, getattr(config, method).beta1) == (lr, beta1)
    assert (config.train.warmup_steps, config.train.grad_clip, config.train.ema_decay) == (0, 0, 0)
    assert f"{epochs} epochs" in preset_description(name)


@pytest.mark.parametrize("override,fragment", [
    ("data.on_bad_image=maybe", "invalid config value data.on_bad_image: 'maybe' is not one of error, skip"),
    ("sample.variance=wide", "invalid config value sample.variance: 'wide' is not one of posterior, beta"),
    ("sample.guidance_interval=[2,1]", "sample.guidance_interval: must be [σ_lo, σ_hi] with 0 <= σ_lo < σ_hi"),
    ("sample.guidance_interval=[0.3]", "sample.guidance_interval: must be [σ_lo, σ_hi]"),
    ("sample.guidance_interval=[-1,1]", "sample.guidance_interval: must be [σ_lo, σ_hi]"),
    ("train.steps=9223372036854775808", "train.steps must be an integer in -2**63..2**63-1"),  # 2**63
    ("train.seed=-9223372036854775809", "train.seed must be an integer in -2**63..2**63-1"),
    ("model.channels=1e300", "model.channels must be an integer in -2**63..2**63-1"),
    ("train.lr=" + "9" * 400, "train.lr must be a finite number"),  # an int beyond float's range
    ("train.steps='" + "9" * 5000 + "'", "train.steps must be an integer, got '99999"),  # more digits than int() reads
    ("data.name=2020-13-45", "data.name: '2020-13-45' is not one of"),  # no date: the text itself
])
def test_values_beyond_what_the_code_can_hold_name_the_key(override, fragment):
    with pytest.raises(UserError) as error:
        load_config("tiny", [override])
    assert fragment in str(error.value) and len(str(error.value)) < 400


def test_the_largest_integers_pass(tmp_path):
    interval = load_config("tiny", ["sample.guidance_interval=[0,10]"]).sample.guidance_interval
    assert interval == [0.0, 10.0] and all(type(v) is float for v in interval)
    assert load_config("tiny", ["train.seed=9223372036854775807"]).train.seed == 2**63 - 1
    assert load_config("tiny", ["data.on_bad_image=skip"]).data.on_bad_image == "skip"


def laughs(levels: int = 9) -> str:
    """'Billion laughs' as one YAML flow list: level k holds nine aliases of level k-1, so its full repr or str()
    holds 9**levels strings (9**9: a gigabyte)."""
    items = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def test_a_yaml_of_nested_aliases_is_refused_at_once(tmp_path):
    import time

    path = tmp_path / "laughs.yaml"
    start = time.perf_counter()
    for section, key, fragment in (("train", "steps", "train.steps must be an integer, got [['lol', 'lol', "),
                                   ("data", "name", "data.name must be a string, got [['lol', 'lol', "),
                                   ("model", "channel_mult", "model.channel_mult[] must be an integer, got ['lol', ")):
        path.write_text(f"{section}:\n  {key}: {laughs()}\n")
        with pytest.raises(UserError) as error:
            load_config(str(path))
        assert fragment in str(error.value) and len(str(error.value)) < 250, str(error.value)
    assert time.perf_counter() - start < 5
