"""Every method through the one training loop: exact resume, train -> sample on the command line, metrics.csv,
one-line errors for what a baseline cannot honour, and DDPM checkpoints written before the methods existed."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.methods import sample_images
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import load_trained, stored_method
from ddpmlab.store.metrics_csv import COLUMNS, loss_columns, read_metrics
from ddpmlab.train import Trainer

BASELINE_NAMES = ("vae", "dcgan", "vaegan")
TIMINGS = ("images_per_s", "wall_s", "other_load")  # what the machine did, not the run


def tiny(method, *overrides):
    return load_config("tiny", [f"method={method}", *overrides])


def _states_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _rows_without_timings(path):
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in read_metrics(path)]


@pytest.mark.parametrize("method", BASELINE_NAMES)
def test_interrupted_and_resumed_run_reaches_the_straight_runs_weights_and_metrics(method, tmp_path):
    straight = Trainer(tiny(method, "train.steps=12"), tmp_path / "a", progress=False)
    straight.train()
    first = Trainer(tiny(method, "train.steps=5"), tmp_path / "b", progress=False)
    first.train()
    resumed = Trainer.resume(tmp_path / "b", ["train.steps=12"], progress=False)
    assert resumed.step == 5
    resumed.train()

    model, ema = straight.model.state_dict(), straight.ema.shadow.state_dict()
    _states_equal(model, resumed.model.state_dict())
    _states_equal(ema, resumed.ema.shadow.state_dict())
    running = [name for name in model if name.endswith("running_mean")]
    assert running and any(model[name].abs().sum() > 0 for name in running)  # batch norm buffers moved, and matched
    assert any(not torch.equal(model[name], ema[name]) for name in model)  # the EMA is an average, not a copy
    for group, optimizer in straight.optimizers.items():
        _states_equal(optimizer.state_dict()["state"][0], resumed.optimizers[group].state_dict()["state"][0])

    rows = _rows_without_timings(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in rows] == [5, 10, 12]
    assert rows == _rows_without_timings(tmp_path / "a" / "metrics.csv")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """{method: run directory} of each baseline trained 10 steps on the tiny preset through the command line."""
    runs = {}
    for method in BASELINE_NAMES:
        runs[method] = tmp_path_factory.mktemp("cli") / method
        assert main(["train", "tiny", f"method={method}", "train.steps=10", "--run-dir", str(runs[method]),
                     "--quiet"]) == 0
    return runs


@pytest.mark.parametrize("method", BASELINE_NAMES)
def test_cli_samples_are_seeded_uint8_images_of_the_ema_network(method, cli_runs, tmp_path):
    run = cli_runs[method]
    images = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert main(["sample", str(run), "--n", "4", "--seed", str(seed), "--out", str(tmp_path / f"{name}.npz"),
                     "--quiet"]) == 0
        with np.load(tmp_path / f"{name}.npz") as data:
            images[name] = data["images"]
            assert data["labels"].tolist() == [-1] * 4 and json.loads(str(data["settings"]))["method"] == method
    assert images["a"].shape == (4, 16, 16, 3) and images["a"].dtype == np.uint8
    assert np.array_equal(images["a"], images["b"]) and not np.array_equal(images["a"], images["c"])
    assert images["a"].std() > 0 and not np.array_equal(images["a"][0], images["a"][1])
    # exactly what the dispatch draws from the loaded EMA network with that seed
    net, schedule, config, step = load_trained(run)
    assert schedule is None and config.method == method and step == 10 and stored_method(run) == method
    expected = sample_images(net, 4, torch.Generator().manual_seed(0))
    assert np.array_equal(images["a"], ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                          .permute(0, 2, 3, 1).numpy())
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "grid.png"), "--quiet"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 100


def test_metrics_csv_has_each_methods_losses(cli_runs):
    for method, logs in (("vae", ("loss", "recon", "kl")), ("dcgan", ("loss_d", "loss_g", "d_real", "d_fake")),
                         ("vaegan", ("loss", "recon", "kl", "loss_d", "loss_g", "d_real", "d_recon", "d_fake"))):
        header = (cli_runs[method] / "metrics.csv").read_text().splitlines()[0].split(",")
        assert tuple(header[:len(COLUMNS)]) == COLUMNS and set(logs) <= set(header), method
        rows = read_metrics(cli_runs[method] / "metrics.csv")
        assert [r["step"] for r in rows] == [5, 10]
        for row in rows:
            assert all(math.isfinite(row[name]) for name in logs), (method, row)
            for probability in ("d_real", "d_fake", "d_recon"):
                assert row.get(probability) is None or 0 < row[probability] < 1
        assert (cli_runs[method] / "loss.png").stat().st_size > 0
    gan = read_metrics(cli_runs["dcgan"] / "metrics.csv")
    assert loss_columns(gan[0]) == ["loss", "loss_d", "loss_g"] and all(r["loss"] is None for r in gan)
    assert all(r["grad_norm_generator"] > 0 and r["grad_norm_discriminator"] > 0 for r in gan)
    assert [r["val_loss"] is None for r in gan] == [True, True]  # a GAN has no validation loss
    vae = read_metrics(cli_runs["vae"] / "metrics.csv")
    assert vae[1]["val_loss"] is not None and math.isfinite(vae[1]["val_loss"])  # the negative ELBO at val_every=10
    assert vae[0]["loss"] == pytest.approx(vae[0]["recon"] + vae[0]["kl"], rel=1e-5)  # kl_weight 1


def test_the_vae_validation_loss_is_its_negative_elbo_on_fixed_batches(tmp_path):
    trainer = Trainer(tiny("vae", "train.steps=1"), tmp_path / "run", progress=False)
    first, second = trainer.validation_loss(), trainer.validation_loss()
    assert first == second and trainer.model.training  # fixed draws; training mode restored
    images = trainer.val_data.images[:trainer.config.train.batch_size].float() / 127.5 - 1
    trainer.model.eval()
    with torch.no_grad():
        expected, _, _ = trainer.model.negative_elbo(images, torch.Generator().manual_seed(1234))
    assert first == pytest.approx(expected.item(), rel=1e-6)


def _expect_user_error(capsys, argv, fragment):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert fragment in err, err


@pytest.mark.parametrize("flag", [["--sampler", "ddim"], ["--steps", "5"], ["--eta", "0.5"], ["--guidance", "1"],
                                  ["--class", "0"], ["--per-class"]])
def test_sampler_flags_for_a_one_pass_model_are_errors(capsys, cli_runs, tmp_path, flag):
    _expect_user_error(capsys, ["sample", cli_runs["vae"], "--out", tmp_path / "x.png", *flag],
                       f"vae samples in one pass; {flag[0]} applies to diffusion models")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["eval", "{dcgan}", "--steps", "5"], "dcgan samples in one pass; --steps applies to diffusion models"),
    (["eval", "{vaegan}", "--sampler", "ddpm"], "vaegan samples in one pass; --sampler applies to diffusion models"),
    (["eval", "{vae}", "--metrics", "nll,speed", "--device", "cpu"], "a vae run has none: leave nll out of --metrics"),
    (["train", "tiny", "vae.latent_dim=8"], "vae.latent_dim applies to method=vae, but this config has method=ddpm"),
    (["train", "tiny", "method=dcgan", "vaegan.adversarial_weight=0.5"], "vaegan.adversarial_weight applies to method=vaegan"),
    (["train", "tiny", "method=gan"], "method: 'gan' is not one of ddpm, vae, dcgan, vaegan"),
    (["train", "tiny", "method=vae", "model.conditional=true"], "method=vae is unconditional"),
    (["train", "--resume", "{vae}", "method=dcgan"], "cannot change method on --resume ('vae' -> 'dcgan')"),
    (["train", "--resume", "{vae}", "vae.latent_dim=64"], "cannot change vae.latent_dim on --resume"),
])
def test_what_a_method_cannot_honour_is_a_one_line_error(capsys, cli_runs, tmp_path, argv, fragment):
    argv = [a.format(**cli_runs) for a in argv]
    if argv[0] == "train" and argv[1] != "--resume":
        argv += ["--run-dir", str(tmp_path / "r")]
    _expect_user_error(capsys, argv, fragment)
    assert not (tmp_path / "r").exists()


def _as_written_before_the_methods(folder):
    """Rewrite a DDPM checkpoint as ddpmlab wrote it before the methods: one optimizer's state, no `method` in the
    weights' metadata, no `method` or baseline sections in its config, no checksums.json."""
    (folder / ckpt.CHECKSUMS_FILE).unlink()
    optimizers = torch.load(folder / ckpt.OPTIMIZER_FILE, weights_only=True)
    torch.save(optimizers["model"], folder / ckpt.OPTIMIZER_FILE)
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        state, metadata = ckpt.read_weights(folder / name)
        del metadata["method"]
        config = json.loads(metadata["config"])
        for key in ("method", "vae", "dcgan", "vaegan"):
            config.pop(key)
        save_file(state, folder / name, metadata={**metadata, "config": json.dumps(config)})


def test_a_ddpm_checkpoint_written_before_the_methods_still_resumes_and_samples(tmp_path):
    import yaml

    straight = Trainer(load_config("tiny", ["train.steps=12"]), tmp_path / "a", progress=False)
    straight.train()
    Trainer(load_config("tiny", ["train.steps=5"]), tmp_path / "b", progress=False).train()
    folder = ckpt.list_checkpoints(tmp_path / "b")[-1]
    _as_written_before_the_methods(folder)
    config = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    (tmp_path / "b" / "config.yaml").write_text(yaml.safe_dump({k: config[k] for k in
                                                                ("data", "model", "diffusion", "train", "sample")}))
    assert "param_groups" in torch.load(folder / ckpt.OPTIMIZER_FILE, weights_only=True)
    assert "method" not in ckpt.read_metadata(folder / ckpt.EMA_FILE) and stored_method(tmp_path / "b") == "ddpm"

    assert main(["sample", str(tmp_path / "b"), "--n", "3", "--steps", "4", "--out", str(tmp_path / "old.npz"),
                 "--quiet"]) == 0
    net, schedule, _, step = load_trained(tmp_path / "b")
    assert step == 5 and schedule.T == 100
    assert np.load(tmp_path / "old.npz")["images"].shape == (3, 16, 16, 3)

    resumed = Trainer.resume(tmp_path / "b", ["train.steps=12"], progress=False)
    resumed.train()
    _states_equal(straight.model.state_dict(), resumed.model.state_dict())
    _states_equal(straight.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())
    newest = ckpt.list_checkpoints(tmp_path / "b")[-1]
    assert ckpt.read_metadata(newest / ckpt.EMA_FILE)["method"] == "ddpm"  # written in the new format from now on
    assert set(torch.load(newest / ckpt.OPTIMIZER_FILE, weights_only=True)) == {"model"}
