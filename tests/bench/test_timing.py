"""The shared bench helpers: FLOP counts equal the layers' closed forms, medians, call counts, shapes from configs."""

import statistics

import pytest
import torch
from torch import nn

from ddpmlab.bench.timing import count_flops, data_shape, images_per_second, matmul_rate, timed_calls
from ddpmlab.config import DataConfig


def test_linear_flops_are_two_in_out_per_row():
    layer, x = nn.Linear(48, 20), torch.randn(7, 48)
    assert count_flops(lambda: layer(x)) == 2 * 48 * 20 * 7
    # backward: the input gradient and the weight gradient, each another 2·in·out·N
    assert count_flops(lambda: layer(x.requires_grad_()).sum().backward()) == 3 * 2 * 48 * 20 * 7


def test_conv_flops_are_two_cin_cout_k2_per_output_pixel():
    conv, x = nn.Conv2d(3, 16, 3, padding=1, stride=2), torch.randn(5, 3, 12, 12)
    out_pixels = 6 * 6
    assert count_flops(lambda: conv(x)) == 2 * 3 * 16 * 3 * 3 * out_pixels * 5


def test_attention_flops_are_two_products_of_n_squared_d():
    q = k = v = torch.randn(2, 1, 64, 32)  # batch 2, one head, 64 tokens of 32 channels
    flops = count_flops(lambda: nn.functional.scaled_dot_product_attention(q, k, v))
    assert flops == 2 * (2 * 64 * 64 * 32) * 2  # QKᵀ and (softmax)V, per batch element


def test_attention_backward_flops_are_twice_the_forward_products():
    q, k, v = (torch.randn(2, 1, 64, 32, requires_grad=True) for _ in range(3))
    flops = count_flops(lambda: nn.functional.scaled_dot_product_attention(q, k, v).sum().backward())
    forward = 2 * (2 * 64 * 64 * 32) * 2
    assert flops == forward + 2.5 * forward  # backward: dV, dP, dQ, dK and the recomputed QKᵀ (5 products)


def test_timed_calls_runs_warmup_then_repeats_and_images_per_second_uses_the_median():
    calls = []
    seconds = timed_calls(lambda: calls.append(1), repeats=4, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 6 and len(seconds) == 4 and all(s >= 0 for s in seconds)
    assert images_per_second(8, [1.0, 4.0, 2.0]) == 8 / statistics.median([1.0, 4.0, 2.0]) == 4.0


def test_matmul_rate_names_its_product():
    rate = matmul_rate(torch.device("cpu"), size=64, repeats=2)
    assert rate["matmul_tflops"] > 0 and (rate["matmul_size"], rate["matmul_dtype"]) == (64, "float32")


@pytest.mark.parametrize("cfg,shape", [
    (DataConfig(name="cifar10"), (3, 32, 10)),
    (DataConfig(name="fashion-mnist"), (1, 28, 10)),
    (DataConfig(name="mnist", image_size=32), (1, 32, 10)),
    (DataConfig(name="sprites", path="absent.npy"), (3, 16, None)),
    (DataConfig(name="synthetic", synthetic_size=12, synthetic_channels=1), (1, 12, 4)),
])
def test_data_shape_without_loading(cfg, shape, monkeypatch):
    monkeypatch.setenv("HOME", "/nonexistent")  # no dataset files are looked for
    assert data_shape(cfg) == shape
