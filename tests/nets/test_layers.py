"""The shared blocks compute the formulas they name, whatever their kernels: attention and the residual block
against plain reference formulas written with 1×1 convolutions and an explicit softmax, values and gradients."""

import math

import torch
import torch.nn.functional as F

from ddpmlab.nets.layers import AttentionBlock, ResBlock


def _randomised(module):
    torch.manual_seed(0)
    for parameter in module.parameters():  # the zero-initialised output convolutions too
        torch.nn.init.normal_(parameter, std=0.1)
    return module


def reference_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """x + proj(softmax(qᵀk / √c) v), q, k, v from a 1×1 convolution of the normalised x (Ho et al.'s NIN layers)."""
    n, c, h, w = x.shape
    q, k, v = F.conv2d(block.norm(x), block.qkv.weight, block.qkv.bias).reshape(n, 3, c, h * w).unbind(1)
    weights = torch.softmax(torch.einsum("nci,ncj->nij", q, k) / math.sqrt(c), dim=-1)
    out = torch.einsum("nij,ncj->nci", weights, v).reshape(n, c, h, w)
    return x + F.conv2d(out, block.proj.weight, block.proj.bias)


def reference_resblock(block: ResBlock, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    h = block.conv1(F.silu(block.norm1(x))) + block.emb(F.silu(emb))[:, :, None, None]
    h = block.conv2(F.silu(block.norm2(h)))  # eval mode: no dropout
    return block.skip(x) + h


def test_attention_is_softmax_of_scaled_dot_products_with_1x1_projections():
    block = _randomised(AttentionBlock(64, groups=8))
    x = torch.randn(3, 64, 8, 8, dtype=torch.float64, requires_grad=True)
    block = block.double()
    out = block(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    expected = reference_attention(block, x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    assert torch.allclose(out, expected, atol=1e-10) and torch.allclose(grad, expected_grad, atol=1e-9)


def test_resblock_values_and_gradients_match_the_formula():
    for in_ch, out_ch in ((32, 32), (32, 48)):  # identity and 1×1 skips
        block = _randomised(ResBlock(in_ch, out_ch, emb_dim=16, dropout=0.1, groups=8)).double().eval()
        x = torch.randn(2, in_ch, 6, 6, dtype=torch.float64, requires_grad=True)
        emb = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
        out = block(x, emb)
        grads = torch.autograd.grad(out.square().sum(), (x, emb, block.conv1.weight, block.conv2.weight))
        expected = reference_resblock(block, x, emb)
        expected_grads = torch.autograd.grad(expected.square().sum(), (x, emb, block.conv1.weight, block.conv2.weight))
        assert torch.allclose(out, expected, atol=1e-10)
        assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(grads, expected_grads))


def test_upsample_is_nearest_doubling_then_its_3x3_convolution():
    from ddpmlab.nets.layers import Upsample

    block = _randomised(Upsample(6)).double()
    for size in (1, 4, 5):
        x = torch.randn(2, 6, size, size + 2, dtype=torch.float64, requires_grad=True)
        out = block(x)
        expected = block.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        grads = torch.autograd.grad(out.square().sum(), (x, block.conv.weight, block.conv.bias))
        expected_grads = torch.autograd.grad(expected.square().sum(), (x, block.conv.weight, block.conv.bias))
        assert out.shape == (2, 6, 2 * size, 2 * size + 4) and torch.allclose(out, expected, atol=1e-12)
        assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, expected_grads))
    assert list(block.state_dict()) == ["conv.weight", "conv.bias"]  # the taps are a constant, not a weight
