"""diffusers DDPM folders: imported models give diffusers' outputs, exported ones load in diffusers and give ours,
the schedulers' β map exactly, and what has no equivalent is a one-line user error. Random weights throughout."""

import json

import pytest
import torch

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.nets import UNet
from ddpmlab.store.diffusers_format import scheduler_betas, write_diffusers
from ddpmlab.store.diffusers_unet import diffusers_state, unet_config, unet_spec

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")

# google/ddpm-cifar10-32's unet config.json (diffusers' port of Ho et al.'s CIFAR-10 model), dropout as trained
CIFAR10_UNET = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "dropout": 0.1,
    "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
    "norm_eps": 1e-6, "norm_num_groups": 32, "act_fn": "silu", "time_embedding_type": "positional",
    "center_input_sample": False, "mid_block_scale_factor": 1,
}
CIFAR10_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                     "variance_type": "fixed_large", "clip_sample": True}
# a small model on the other conventions: diffusers' defaults of flip/shift/eps, symmetric padding, classes
SMALL_UNET = {
    "sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": None, "norm_num_groups": 8, "num_class_embeds": 5,
}


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter redrawn (zero-initialised output layers included), so that every weight is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (1.0 if p.dim() == 1 else 0.5 / p[0].numel() ** 0.5))
    return module.eval()


def their_output(unet, x, t, labels=None):
    with torch.no_grad():
        return unet(x, t, class_labels=labels).sample


@pytest.fixture(scope="module")
def cifar10_flat(tmp_path_factory):
    """google/ddpm-cifar10-32's flat layout, saved by diffusers with random weights: (folder, UNet2DModel)."""
    folder = tmp_path_factory.mktemp("ddpm-cifar10-32")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**CIFAR10_UNET).eval()
    unet.save_pretrained(folder)
    diffusers.DDPMScheduler(**CIFAR10_SCHEDULER).save_pretrained(folder)
    return folder, unet


def test_google_cifar10_unet_imported_gives_diffusers_output(cifar10_flat):
    folder, unet = cifar10_flat
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    pipe = ddpmlab.load(folder)
    assert pipe.net.spec.downsample == "tf-same" and pipe.net.spec.attention_resolutions == [16]
    assert pipe.config.sample.variance == "beta" and pipe.config.sample.sampler == "ddpm"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for t in ([0, 999], [10, 500]):
        t = torch.tensor(t)
        difference = (pipe.denoise(x, t) - their_output(unet, x, t)).abs().max().item()
        assert difference < 1e-4, difference


def small_unet(seed: int = 0):
    torch.manual_seed(seed)
    return randomized(diffusers.UNet2DModel(**SMALL_UNET), seed)


@pytest.mark.parametrize("layout", ["pipeline", "bin", "legacy-names"])
def test_a_pipeline_folder_imports_in_every_weights_format(tmp_path, layout):
    unet = small_unet()
    scheduler = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                        clip_sample=False)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(
        tmp_path, safe_serialization=layout == "pipeline")
    if layout == "legacy-names":  # diffusers before 0.14 named attention query, key, value, proj_attn
        names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        state = torch.load(tmp_path / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
        for new, old in names.items():
            state = {k.replace(f".{new}.", f".{old}."): v for k, v in state.items()}
        torch.save(state, tmp_path / "unet" / "diffusion_pytorch_model.bin")
    pipe = ddpmlab.load(tmp_path)
    assert pipe.config.diffusion.prediction == "v" and pipe.config.sample.sampler == "ddim"
    assert pipe.num_classes == 4 and not pipe.config.sample.clip_denoised
    assert torch.allclose(pipe.schedule.betas, scheduler.betas.double(), atol=1e-7)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t, labels = torch.tensor([0, 400, 999]), torch.tensor([0, 4, 2])
    difference = (pipe.denoise(x, t, labels) - their_output(unet, x, t, labels)).abs().max().item()
    assert difference < 1e-4, difference


def exported(tmp_path, net_kwargs, diffusion=None, seed=3):
    """A random ddpmlab UNet written by write_diffusers and read back by diffusers: (ours, DDPMPipeline)."""
    from ddpmlab.config import Config, DiffusionConfig
    from ddpmlab.methods import DDPM, build_schedule

    diffusion = diffusion or DiffusionConfig()
    config = Config(diffusion=diffusion)
    net = DDPM(randomized(UNet(**net_kwargs), seed), build_schedule(diffusion), diffusion).eval()
    write_diffusers(net, config, tmp_path / "out")
    return net, diffusers.DDPMPipeline.from_pretrained(tmp_path / "out")


def test_an_exported_model_loads_in_diffusers_and_gives_our_output(tmp_path):
    kwargs = dict(in_channels=3, channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8,),
                  image_size=16, groups=16, num_classes=3, downsample="tf-same")
    net, pipeline = exported(tmp_path, kwargs)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    t, labels = torch.tensor([0, 250, 999]), torch.tensor([0, 1, 3])  # 3: the null label
    with torch.no_grad():
        ours = net(x, t, labels)
    difference = (ours - their_output(pipeline.unet, x, t, labels)).abs().max().item()
    assert difference < 1e-4, difference
    assert torch.allclose(pipeline.scheduler.betas.double(), net.schedule.betas, atol=1e-7)


def test_export_then_import_is_the_identity_on_weights_and_schedule(tmp_path):
    from ddpmlab.config import DiffusionConfig

    kwargs = dict(in_channels=1, channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                  image_size=8, groups=8)
    net, _ = exported(tmp_path, kwargs, DiffusionConfig(timesteps=50, schedule="cosine", prediction="x0"))
    pipe = ddpmlab.load(tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), pipe.net.state_dict().values()))
    assert torch.allclose(pipe.schedule.betas, net.schedule.betas, atol=1e-12)
    assert pipe.config.diffusion.prediction == "x0" and pipe.config.sample.variance == "posterior"


@pytest.mark.parametrize("config", [
    {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"trained_betas": torch.linspace(1e-3, 0.05, 1000).tolist()},
])
def test_scheduler_betas_are_diffusers_betas(config):
    theirs = diffusers.DDPMScheduler(**config).betas.double()  # computed in float32: equal to its rounding
    assert torch.allclose(scheduler_betas(config), theirs, rtol=1e-6, atol=0)


def test_unets_ddpmlab_cannot_express_are_refused_on_export():
    with pytest.raises(ddpmlab.UserError, match="UNet2DModel cannot"):
        write_diffusers_check(UNet(channels=24, channel_mult=(1, 2), groups=32, image_size=8, attention_resolutions=()))
    with pytest.raises(ddpmlab.UserError, match="image size 28 is not a multiple of 8"):
        write_diffusers_check(UNet(channels=32, channel_mult=(1, 2, 2, 2), image_size=28, attention_resolutions=()))


def write_diffusers_check(unet):
    unet_config(unet.spec)
    diffusers_state(unet.state_dict(), unet.spec)


@pytest.mark.parametrize("change,message", [
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "block type CrossAttnDownBlock2D has no ddpmlab"),
    ({"attention_head_dim": 8}, "multi-head attention has no ddpmlab equivalent"),
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep' has no ddpmlab equivalent"),
    ({"_class_name": "UNet2DConditionModel"}, "UNet2DConditionModel has no ddpmlab equivalent"),
    ({"up_block_types": ["UpBlock2D", "UpBlock2D"]}, "attention at different levels"),
    ({"out_channels": 6}, "out_channels=6 differs from in_channels=3"),
])
def test_configs_without_an_equivalent_name_what(change, message):
    with pytest.raises(ddpmlab.UserError, match=message):
        unet_spec({**SMALL_UNET, **change})


@pytest.fixture()
def small_folder(tmp_path):
    diffusers.DDPMPipeline(unet=small_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def cli_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_folders_are_one_line_errors_and_write_nothing(capsys, small_folder, tmp_path):
    config = json.loads((small_folder / "unet" / "config.json").read_text())
    (small_folder / "unet" / "config.json").write_text(json.dumps({**config, "block_out_channels": [32, 96]}))
    assert "weights do not match" in cli_error(capsys, ["sample", small_folder, "--out", tmp_path / "x.png"])
    cross = {**config, "mid_block_type": "UNetMidBlock2DCrossAttn"}
    (small_folder / "unet" / "config.json").write_text(json.dumps(cross))
    assert "mid_block_type='UNetMidBlock2DCrossAttn' has no ddpmlab" in cli_error(
        capsys, ["sample", small_folder, "--out", tmp_path / "x.png"])
    (small_folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"variance_type": "learned_range"}))
    (small_folder / "unet" / "config.json").write_text(json.dumps(config))
    assert "learned variance" in cli_error(capsys, ["sample", small_folder, "--out", tmp_path / "x.png"])
    (small_folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    (small_folder / "scheduler" / "scheduler_config.json").write_text("{}")
    assert "not readable weights" in cli_error(capsys, ["sample", small_folder, "--out", tmp_path / "x.png"])
    latent = {"_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"]}
    (small_folder / "model_index.json").write_text(json.dumps(latent))
    assert "LDMPipeline with vqvae" in cli_error(capsys, ["sample", small_folder, "--out", tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


def test_a_diffusers_folder_samples_from_the_cli(capsys, small_folder, tmp_path):
    assert main(["sample", str(small_folder), "--out", str(tmp_path / "x.npz"), "--n", "2", "--class", "1",
                 "--sampler", "ddim", "--steps", "2", "--quiet"]) == 0
    assert "wrote 2 samples (ddim, 2 steps" in capsys.readouterr().out
