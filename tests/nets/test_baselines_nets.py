import pytest
import torch

from ddpmlab import UserError
from ddpmlab.nets.baselines import ConvDecoder, Discriminator, GaussianEncoder, dcgan_init_, stage_layout, stage_widths


@pytest.mark.parametrize("size,layout", [(8, (1, 4)), (16, (2, 4)), (28, (2, 7)), (32, (3, 4)), (64, (4, 4)), (20, (2, 5))])
def test_stage_layout_halves_down_to_a_base_of_at_least_4(size, layout):
    assert stage_layout(size) == layout


@pytest.mark.parametrize("size", [6, 15, 27])
def test_unsupported_sizes_are_user_errors(size):
    with pytest.raises(UserError, match="even size of at least 8"):
        stage_layout(size)


def test_widths_double_inwards_like_dcgan():
    assert stage_widths(64, 64) == [64, 128, 256, 512]  # Radford et al.'s 64×64 generator, read backwards
    assert stage_widths(28, 64) == [64, 128]


@pytest.mark.parametrize("size,channels", [(16, 3), (28, 1), (32, 3)])
def test_networks_map_between_images_latents_and_logits(size, channels):
    x = torch.randn(3, channels, size, size)
    assert ConvDecoder(10, channels, size, 8)(torch.randn(3, 10)).shape == x.shape
    assert Discriminator(channels, size, 8)(x).shape == (3,)
    mu, logvar = GaussianEncoder(channels, size, 8, 10)(x)
    assert mu.shape == logvar.shape == (3, 10)


def test_28px_decoder_has_a_7x7_base_and_no_cropping():
    decoder = ConvDecoder(10, 1, 28, 8)
    assert decoder.layers[0].kernel_size == (7, 7)
    assert decoder(torch.randn(2, 10)).shape == (2, 1, 28, 28)


def test_dcgan_init_draws_weights_from_the_paper_distributions():
    torch.manual_seed(0)
    net = dcgan_init_(ConvDecoder(100, 3, 32, 64))
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    norms = [m.weight for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    conv_weights, norm_weights = torch.cat([w.flatten() for w in convs]), torch.cat([w.flatten() for w in norms])
    assert conv_weights.mean().abs() < 1e-3 and conv_weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert norm_weights.mean().item() == pytest.approx(1.0, abs=0.01)
    assert norm_weights.std().item() == pytest.approx(0.02, rel=0.2)
