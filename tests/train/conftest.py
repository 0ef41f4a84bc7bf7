"""A backbone that is not a UNet: the trainer must train any `model(x_t, t, labels=None)`."""

import pytest
import torch


class ConvBackbone(torch.nn.Module):
    """One 3×3 convolution, no `.prediction` or `.spec`: the config alone says what it predicts."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t, labels=None):
        return self.net(x)


@pytest.fixture
def conv_backbone():
    return ConvBackbone()
