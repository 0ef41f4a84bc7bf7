"""`hf:ORG/NAME[@REVISION]` sources, offline against a Hugging Face cache laid out in the test's folder: the cached
model loads with diffusers' outputs and samples from the CLI; not cached, no huggingface_hub and malformed names are
one-line errors naming the fix, and nothing is written."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.images import model_to_uint8

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")
huggingface_hub = pytest.importorskip("huggingface_hub", reason="the optional [hub] extra: pip install -e .[hub]")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_UNET = {"sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [32, 64],
             "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
             "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": None, "norm_num_groups": 8,
             "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "norm_eps": 1e-6}


def tiny_unet():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET).eval()
    with torch.no_grad():  # every weight drawn, the zero-initialised output layers included
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 if p.dim() == 1 else 0.5 / p[0].numel() ** 0.5))
    return unet


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (HF_HUB_CACHE) in the test's folder, offline (HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables once, when imported: the running process sees them through its constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_model(cache, repo: str, layout: str, ref: str = "main"):
    """A tiny DDPM saved by diffusers as snapshots/COMMIT of `repo` in the cache, refs/REF naming COMMIT; layout "flat"
    (google/ddpm-cifar10-32's: the UNet's files and a model_index.json at the root), "bin" (the same with .bin
    weights) or "pipeline"."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    unet, scheduler = tiny_unet(), diffusers.DDPMScheduler(variance_type="fixed_large", clip_sample=True)
    if layout == "pipeline":
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(snapshot)
    else:
        unet.save_pretrained(snapshot, safe_serialization=layout != "bin")
        scheduler.save_pretrained(snapshot)
        (snapshot / "model_index.json").write_text('{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", '
                                                   '"DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}')
    (folder / "refs").mkdir()
    (folder / "refs" / ref).write_text(COMMIT)
    return unet


@pytest.mark.parametrize("layout", ["flat", "bin", "pipeline"])
def test_a_cached_hub_model_loads_offline_with_diffusers_outputs(offline_cache, layout):
    unet = cache_model(offline_cache, "org/name", layout)
    pipe = ddpmlab.load("hf:org/name")
    assert pipe.net.spec.downsample == "tf-same" and pipe.config.sample.variance == "beta"
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 900])
    with torch.no_grad():
        theirs = unet(x, t).sample
    assert (pipe.denoise(x, t) - theirs).abs().max().item() < 1e-4


def test_a_revision_reads_its_ref_and_the_cli_samples_offline(offline_cache, tmp_path, capsys):
    cache_model(offline_cache, "org/name", "flat", ref="v1")
    out = tmp_path / "s.npz"
    assert main(["sample", "hf:org/name@v1", "--n", "2", "--steps", "3", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    assert "from hf:org/name@v1" in capsys.readouterr().out
    with np.load(out) as data:
        images = data["images"]
    expected = model_to_uint8(ddpmlab.load("hf:org/name@v1").sample(2, steps=3, seed=0))
    assert images.shape == (2, 16, 16, 3) and np.array_equal(images, expected.permute(0, 2, 3, 1).numpy())


def one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_not_cached_offline_names_where_the_files_go(offline_cache, tmp_path, capsys):
    err = one_line_error(capsys, ["sample", "hf:org/missing", "--out", tmp_path / "s.png"])
    repo = offline_cache / "models--org--missing"
    assert "hf:org/missing: not in the Hugging Face cache" in err
    assert f"put the files in {repo}/snapshots/COMMIT/ with the commit in {repo}/refs/main" in err
    cache_model(offline_cache, "org/name", "flat")
    assert "refs/v2" in one_line_error(capsys, ["sample", "hf:org/name@v2", "--out", tmp_path / "s.png"])
    assert not (tmp_path / "s.png").exists()


def test_without_huggingface_hub_the_error_names_the_extra(offline_cache, tmp_path, capsys, monkeypatch):
    cache_model(offline_cache, "org/name", "flat")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    err = one_line_error(capsys, ["sample", "hf:org/name", "--out", tmp_path / "s.png"])
    assert err == "error: hf:org/name: Hugging Face sources need huggingface_hub: pip install ddpmlab[hub]\n"
    with pytest.raises(ddpmlab.UserError, match=r"pip install ddpmlab\[hub\]"):
        ddpmlab.load("hf:org/name")


@pytest.mark.parametrize("source", ["hf:", "hf:name", "hf:a/b/c", "hf:/b", "hf:a/", "hf:a--x/b", "hf:a/b c"])
def test_malformed_names_are_refused(offline_cache, tmp_path, capsys, source):
    err = one_line_error(capsys, ["sample", source, "--out", tmp_path / "s.png"])
    assert err == (f"error: {source}: write a Hugging Face model as hf:ORG/NAME or hf:ORG/NAME@REVISION "
                   f"(e.g. hf:google/ddpm-cifar10-32)\n")


@pytest.mark.parametrize("source", ["hf:a/b@", "hf:a/b@../x", "hf:a/b@bad rev", "hf:a/b@main/"])
def test_bad_revisions_are_refused(offline_cache, tmp_path, capsys, source):
    err = one_line_error(capsys, ["sample", source, "--out", tmp_path / "s.png"])
    assert err == f"error: {source}: the revision after '@' must be a branch, tag or commit hash (e.g. @main)\n"


def test_a_repository_without_a_ddpm_model_is_named(offline_cache, tmp_path, capsys):
    snapshot = offline_cache / "models--org--text" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")  # a config without diffusers weights (a transformers model, say)
    (offline_cache / "models--org--text" / "refs").mkdir()
    (offline_cache / "models--org--text" / "refs" / "main").write_text(COMMIT)
    assert "hf:org/text: the repository holds no diffusers DDPM model" in one_line_error(
        capsys, ["sample", "hf:org/text", "--out", tmp_path / "s.png"])


def test_eval_of_a_hub_model_writes_in_the_current_folder_not_in_the_cache(offline_cache, tmp_path, monkeypatch):
    from ddpmlab.store.pretrained import resolve_source
    from ddpmlab.store.run_dir import eval_folder, run_of

    cache_model(offline_cache, "org/name", "flat")
    monkeypatch.chdir(tmp_path)
    assert eval_folder(run_of(resolve_source("hf:org/name"))) == Path("eval") / "hf-org--name"
