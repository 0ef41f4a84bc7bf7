"""`ddpmlab bench train|sample` on a tiny config: one JSON line with a positive median; user mistakes are one
`error:` line and exit 2. Speeds are never asserted, only that they are measured."""

import json

import pytest
import torch

from ddpmlab.cli import main

TINY = ["tiny", "model.channels=8", "model.groups=4"]  # a very small U-Net, still with attention


def test_train_json_is_one_line_with_a_positive_median(capsys):
    assert main(["bench", "train", *TINY, "--batch-size", "2", "--steps", "2", "--warmup", "0", "--device", "cpu",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")
    result = json.loads(out)
    assert result["images_per_s"] > 0 and result["batch_size"] == 2 and len(result["seconds"]) == 2
    assert result["images_per_s"] == pytest.approx(2 / (sum(result["seconds"]) / 2))  # median of two: their mean
    assert 0 < result["forward_flops_per_image"] < result["train_flops_per_image"]
    assert result["image_shape"] == [3, 16, 16] and result["matmul_tflops"] > 0 and result["matmul_fraction"] > 0


def test_train_text_names_the_figures(capsys):
    assert main(["bench", "train", *TINY, "--batch-size", "1", "--steps", "1", "--warmup", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for words in ("images/s (median)", "s per step", "FLOPs per image", "float32 matmul", "peak memory"):
        assert words in out


def test_sample_json_counts_network_evaluations(capsys):
    assert main(["bench", "sample", *TINY, "--sampler", "heun", "--steps", "2", "--batch-size", "2", "--repeats", "1",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nfe"] == 3 and result["images_per_s"] > 0
    assert result["network_evaluations_per_s"] == pytest.approx(3 / result["seconds_per_batch"])


@pytest.mark.parametrize("args,message", [
    (["train", "no-such-preset"], "unknown preset"),
    (["train", *TINY, "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", *TINY, "--steps", "-1"], "--steps must be a positive integer"),
    (["train", *TINY, "--device", "cuda"], "no CUDA GPU"),
    (["sample", *TINY, "--sampler", "euler", "--steps", "5"], "unknown sampler 'euler'"),
    (["sample", *TINY, "--sampler", "ddim", "--steps", "0"], "must be an integer in 1..100"),
    (["sample", *TINY, "--sampler", "ddim", "--batch-size", "-2"], "--batch-size must be a positive integer"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_train_runs_and_reports_the_speed_switches_it_was_given(capsys):
    args = ["bench", "train", *TINY, "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu", "--json"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert (default["fused_adam"], default["channels_last"], default["compile"]) == (False, False, False)  # auto on a CPU
    assert main([*args, "train.channels_last=true", "train.fused_adam=true"]) == 0
    switched = json.loads(capsys.readouterr().out)
    assert (switched["fused_adam"], switched["channels_last"], switched["compile"]) == (True, True, False)
    assert switched["train_flops_per_image"] == default["train_flops_per_image"]  # the same maths


def test_sample_reports_its_layout(capsys):
    assert main(["bench", "sample", *TINY, "train.channels_last=true", "--sampler", "ddim", "--steps", "2",
                 "--batch-size", "2", "--repeats", "1", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["channels_last"] is True and result["bf16"] is False and result["images_per_s"] > 0


# parameters of each method's networks on the tiny preset's 3×16×16 images (the U-Net: 177,427)
METHOD_PARAMETERS = {"vae": 1_055_683, "dcgan": 475_844, "vaegan": 1_978_884}


@pytest.mark.parametrize("method", METHOD_PARAMETERS)
def test_train_times_the_method_asked_for_through_its_own_loss(method, capsys, monkeypatch):
    from ddpmlab.methods import BASELINES

    phases = []
    original = BASELINES[method].training_phases

    def recorded(self, *args, **kwargs):
        for phase in original(self, *args, **kwargs):
            phases.append(phase.group)
            yield phase

    monkeypatch.setattr(BASELINES[method], "training_phases", recorded)
    assert main(["bench", "train", "tiny", f"method={method}", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == method and result["parameters"] == METHOD_PARAMETERS[method]
    groups = list(BASELINES[method](3, 16).parameter_groups())
    assert phases[:len(groups)] and set(phases) == set(groups)  # every optimizer's phase ran
    assert 0 < result["forward_flops_per_image"] < result["train_flops_per_image"]


@pytest.mark.parametrize("method", METHOD_PARAMETERS)
def test_sample_draws_a_baseline_in_its_one_pass(method, capsys):
    assert main(["bench", "sample", "tiny", f"method={method}", "--batch-size", "2", "--repeats", "1", "--device",
                 "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["method"], result["sampler"], result["steps"], result["nfe"]) == (method, method, None, 1)
    assert result["parameters"] == METHOD_PARAMETERS[method] and result["images_per_s"] > 0


@pytest.mark.parametrize("args,message", [
    (["tiny", "method=dcgan", "--sampler", "ddim"], "dcgan samples in one pass; --sampler applies to diffusion models"),
    (["tiny", "method=vae", "--steps", "3"], "vae samples in one pass; --steps applies to diffusion models"),
    (["tiny"], "a ddpm model needs --sampler: ddpm, ddim"),
])
def test_sample_refuses_sampler_flags_that_do_not_apply(args, message, capsys):
    assert main(["bench", "sample", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
