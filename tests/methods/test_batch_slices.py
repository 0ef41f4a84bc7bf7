"""Processes that split a batch: with its rows (a BatchSlice) every method trains and samples on exactly its share of
what one process computes for the whole batch, so averaged over equal shares the losses and gradients are the
whole batch's."""

import pytest
import torch

from ddpmlab.config import load_config
from ddpmlab.methods import BASELINES, build_method, sample_images
from ddpmlab.rng import split_rows
from ddpmlab.samplers import SamplingSettings

WORLD = 2


def first_phase(net, x0, rows=None):
    """(loss, {name: gradient} of its group) of the first training phase, t/noise/latents drawn from seed 3."""
    net.zero_grad(set_to_none=True)
    phase = next(net.training_phases(x0, torch.Generator().manual_seed(3), None, rows))
    phase.loss.backward()
    group = {id(p) for p in net.parameter_groups()[phase.group]}
    return phase.loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()
                                 if id(p) in group and p.grad is not None}


def tiny_ddpm():
    torch.manual_seed(0)
    return build_method(load_config("tiny", ["model.dropout=0"]), 3, 16)


def methods():
    yield "ddpm", tiny_ddpm().train()  # GroupNorm: every image is computed alone
    for name, cls in sorted(BASELINES.items()):
        torch.manual_seed(0)
        yield name, cls(channels=3, image_size=16, base_channels=8).eval()  # BatchNorm's running statistics


@pytest.mark.parametrize("name,net", list(methods()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_mean_over_equal_shares_is_the_whole_batch_loss_and_gradient(name, net, shapes_batch):
    whole_loss, whole_grads = first_phase(net, shapes_batch)
    shares = [first_phase(net, shapes_batch[rows.start:rows.stop], rows)
              for rows in (split_rows(len(shapes_batch), rank, WORLD) for rank in range(WORLD))]
    assert torch.allclose(sum(loss for loss, _ in shares) / WORLD, whole_loss, rtol=1e-5)
    assert whole_grads and set(shares[0][1]) == set(whole_grads)
    for key, grad in whole_grads.items():
        mean = sum(grads[key] for _, grads in shares) / WORLD
        assert torch.allclose(mean, grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item()), key
    # without the slice a process would draw the first rows' noise for its own rows: another loss
    if name in ("ddpm", "vae"):
        unsliced, _ = first_phase(net, shapes_batch[8:])
        assert not torch.allclose(unsliced, shares[1][0], rtol=1e-5)


@pytest.mark.parametrize("sampling", [SamplingSettings("ddpm", 5), SamplingSettings("ddim", 4, eta=1.0),
                                      SamplingSettings("sde-dpm-solver++", 4), None],
                         ids=["ddpm", "ddim-eta1", "sde-dpm-solver++", "vae"])
def test_shares_of_a_sampled_batch_are_the_rows_of_the_one_process_batch(sampling):
    if sampling is None:
        torch.manual_seed(0)
        net = BASELINES["vae"](channels=3, image_size=16, base_channels=8)
    else:
        net = tiny_ddpm()
    n = 5
    whole = sample_images(net, n, torch.Generator().manual_seed(7), sampling)
    for rank in range(WORLD):
        rows = split_rows(n, rank, WORLD)
        share = sample_images(net, len(rows), torch.Generator().manual_seed(7), sampling, rows=rows)
        assert torch.allclose(share, whole[rows.start:rows.stop], atol=1e-5)
    if sampling is not None:  # a fixed x_T: the later steps' noise is sliced as well
        noise = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        whole = sample_images(net, n, torch.Generator().manual_seed(7), sampling, noise=noise)
        rows = split_rows(n, 1, WORLD)
        share = sample_images(net, len(rows), torch.Generator().manual_seed(7), sampling, noise=rows.take(noise),
                              rows=rows)
        assert torch.allclose(share, whole[rows.start:], atol=1e-5)
