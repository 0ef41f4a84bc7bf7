"""ddpmlab.load and the Pipeline it returns: sample and denoise on the shipped models, a baseline, bad input."""

import pytest
import torch

import ddpmlab
from ddpmlab.samplers import sample
from ddpmlab.store.load import load_trained


@pytest.fixture(scope="module")
def pipe():
    return ddpmlab.load("pretrained:cpu-demo")


def test_load_is_the_package_api_and_holds_what_load_trained_returns(pipe):
    _, schedule, config, step = load_trained("pretrained:cpu-demo", device="cpu")
    assert isinstance(pipe, ddpmlab.Pipeline)
    assert pipe.step == step and pipe.config == config and pipe.schedule.T == schedule.T == 1000
    assert torch.equal(pipe.schedule.betas, schedule.betas)
    assert pipe.image_shape == (1, 28, 28) and pipe.num_classes is None and pipe.to("cpu") is pipe


def test_sample_is_in_range_and_a_function_of_the_seed(pipe):
    images = pipe.sample(2, sampler="ddim", steps=4, seed=1)
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.float32 and images.abs().max() <= 1
    assert torch.equal(images, pipe.sample(2, sampler="ddim", steps=4, seed=1))
    assert (images - pipe.sample(2, sampler="ddim", steps=4, seed=2)).abs().max() > 0.1


def test_noise_is_x_T_and_gives_what_the_sampler_gives(pipe):
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    ours = pipe.sample(2, sampler="ddim", steps=4, noise=x_T, seed=3)
    direct = sample(pipe.net, pipe.schedule, x_T.shape, sampler="ddim", steps=4, noise=x_T, prediction="v")
    assert torch.equal(ours, direct)
    assert torch.equal(ours, pipe.sample(2, sampler="ddim", steps=4, noise=x_T, seed=99))  # DDIM η=0: no later draws


def test_ddpm_variance_is_a_sampling_setting(pipe):
    posterior = pipe.sample(1, sampler="ddpm", steps=5, seed=0)
    beta = pipe.sample(1, sampler="ddpm", steps=5, seed=0, variance="beta")
    assert (posterior - beta).abs().max() > 1e-3


def test_denoise_is_the_raw_network_output(pipe):
    x_t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = pipe.net(x_t, t)
    assert torch.equal(pipe.denoise(x_t, t), expected)
    assert torch.equal(pipe.denoise(x_t, 500)[1], pipe.denoise(x_t, [500, 500])[1])


def test_a_conditional_model_takes_labels():
    pipe = ddpmlab.load("pretrained:cpu-demo-cond")
    labels = torch.tensor([3, 3])
    images = pipe.sample(2, sampler="ddim", steps=3, labels=labels, guidance=1.0)
    assert images.shape == (2, 1, 28, 28) and pipe.num_classes == 10
    x_t = torch.randn(2, 1, 28, 28)
    assert not torch.equal(pipe.denoise(x_t, 100, labels=[0, 0]), pipe.denoise(x_t, 100, labels=[5, 5]))


def test_a_baseline_samples_in_one_pass_and_has_no_denoiser():
    pipe = ddpmlab.load("pretrained:cpu-demo-vae")
    images = pipe.sample(3, seed=0)
    assert images.shape == (3, 1, 28, 28) and images.abs().max() <= 1 and pipe.schedule is None
    assert torch.equal(images, pipe.sample(3, seed=0))
    with pytest.raises(ddpmlab.UserError, match="vae draws an image in one network pass: it has no denoiser"):
        pipe.denoise(torch.zeros(1, 1, 28, 28), 0)
    with pytest.raises(ddpmlab.UserError, match="steps applies to diffusion models only"):
        pipe.sample(3, steps=10)


@pytest.mark.parametrize("call,message", [
    (lambda p: p.sample(0), "n=0 must be a positive integer"),
    (lambda p: p.sample(2, labels=[0, 1]), "labels need a class-conditional model"),
    (lambda p: p.sample(2, noise=torch.zeros(2, 3, 28, 28)), r"noise \(x_T\) must be a 2×1×28×28 tensor"),
    (lambda p: p.sample(2, sampler="nope"), "unknown sampler 'nope'"),
    (lambda p: p.sample(2, sampler="ddpm", variance="wide"), "variance 'wide' is not one of posterior, beta"),
    (lambda p: p.denoise(torch.zeros(1, 1, 28, 28), 1000), r"each in 0\.\.999"),
    (lambda p: p.denoise(torch.zeros(1, 3, 28, 28), 0), "x_t must be a N×1×28×28 tensor"),
])
def test_bad_input_is_a_user_error(pipe, call, message):
    with pytest.raises(ddpmlab.UserError, match=message):
        call(pipe)


def test_a_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(ddpmlab.UserError, match="no such run directory"):
        ddpmlab.load(tmp_path / "nothing")
