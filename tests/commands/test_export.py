"""`ddpmlab export SOURCE --format diffusers --out DIR`: diffusers loads and samples what it writes, with our outputs;
baselines, non-empty folders and bad sources are one-line errors that write nothing."""

import json

import numpy as np
import pytest
import torch

import ddpmlab
from ddpmlab.cli import main

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")


def one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_the_shipped_model_exported_loads_in_diffusers_with_our_output(tmp_path, capsys):
    out = tmp_path / "cpu-demo"
    assert main(["export", "pretrained:cpu-demo", "--format", "diffusers", "--out", str(out)]) == 0
    assert "as a diffusers DDPMPipeline" in capsys.readouterr().out
    pipeline = diffusers.DDPMPipeline.from_pretrained(out)
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    assert pipeline.scheduler.config.variance_type == "fixed_small" and pipeline.scheduler.config.clip_sample
    ours = ddpmlab.load("pretrained:cpu-demo")
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 500, 999])
    with torch.no_grad():
        theirs = pipeline.unet(x, t).sample
    assert (ours.denoise(x, t) - theirs).abs().max().item() < 1e-4
    images = pipeline(batch_size=1, num_inference_steps=2, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 28, 28, 1) and np.isfinite(images).all()


def test_export_refuses_baselines_non_empty_folders_and_bad_sources(tmp_path, capsys):
    out = tmp_path / "out"
    assert "a vae model has no diffusers pipeline" in one_line_error(
        capsys, ["export", "pretrained:cpu-demo-vae", "--out", out])
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "exists and is not an empty folder" in one_line_error(
        capsys, ["export", "pretrained:cpu-demo", "--out", out])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert "no such run directory" in one_line_error(capsys, ["export", tmp_path / "missing", "--out", tmp_path / "o"])
    with pytest.raises(SystemExit, match="2"):  # argparse's own check, as one line
        main(["export", "pretrained:cpu-demo", "--format", "onnx", "--out", str(tmp_path / "o")])
    assert capsys.readouterr().err.startswith("error: argument --format: invalid choice: 'onnx'")
    assert not (tmp_path / "o").exists()


def test_a_conditional_model_exports_its_null_label_as_one_more_class(tmp_path):
    out = tmp_path / "cond"
    assert main(["export", "pretrained:cpu-demo-cond", "--out", str(out)]) == 0
    config = json.loads((out / "unet" / "config.json").read_text())
    assert config["num_class_embeds"] == 11 and config["down_block_types"] == ["DownBlock2D"] * 3
    ours = ddpmlab.load("pretrained:cpu-demo-cond")
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    x, t, labels = torch.randn(2, 1, 28, 28), torch.tensor([3, 800]), torch.tensor([7, 10])
    with torch.no_grad():
        assert (ours.denoise(x, t, labels) - unet(x, t, class_labels=labels).sample).abs().max().item() < 1e-4
