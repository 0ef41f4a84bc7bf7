import pytest
import torch

from ddpmlab.nets import UNet


def test_cifar10_configuration_has_35_7M_parameters():
    net = UNet(in_channels=3, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
               attention_resolutions=(16,), dropout=0.1, image_size=32)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - 35.7e6) <= 0.1e6


@pytest.mark.parametrize("channels,size", [(1, 16), (1, 28), (3, 32)])
def test_output_keeps_input_shape(channels, size):
    net = UNet(in_channels=channels, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(8,), image_size=size)
    x = torch.randn(2, channels, size, size)
    assert net(x, torch.tensor([0, 999])).shape == x.shape


def _randomise_zero_inits(net):
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.05)


def test_label_changes_the_output():
    net = UNet(in_channels=1, channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
               image_size=16, num_classes=10).eval()
    _randomise_zero_inits(net)
    x, t = torch.randn(1, 1, 16, 16).repeat(3, 1, 1, 1), torch.tensor([100, 100, 100])
    out = net(x, t, torch.tensor([0, 7, 10]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert not torch.allclose(out[0], out[2], atol=1e-4)
    assert torch.allclose(net(x[:1], t[:1], None), out[2:], atol=1e-5)  # None means the null label
    assert net.null_label == 10


def test_timestep_changes_the_output_and_28px_content_is_not_cropped():
    net = UNet(in_channels=1, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(),
               image_size=28).eval()
    _randomise_zero_inits(net)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(net(x, torch.tensor([1])), net(x, torch.tensor([900])), atol=1e-4)
    # the bottom-right pixel of the input influences the output: content is padded, not cropped
    x2 = x.clone()
    x2[..., 27, 27] += 5.0
    assert not torch.allclose(net(x, torch.tensor([5])), net(x2, torch.tensor([5])))


def test_spec_round_trip():
    net = UNet(in_channels=1, channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
               image_size=16, num_classes=4, prediction="v")
    clone = UNet.from_spec(net.spec)
    clone.load_state_dict(net.state_dict())
    assert clone.prediction == "v" and clone.num_classes == 4
