"""Tiny runs built once per session, shared by the tests of hostile input and of the CLI."""

import pytest
import torch

from ddpmlab.config import DataConfig, load_config
from ddpmlab.train import Trainer

TINY_DATA = {"name": "synthetic", "synthetic_count": 512, "synthetic_size": 16, "val_fraction": 0.1}  # tiny's images


def trained_tiny(tmp_path_factory, name: str, overrides: list[str]):
    """The tiny preset with `overrides`, trained into a fresh folder named `name`; returns the run directory."""
    run = tmp_path_factory.mktemp(name) / "tiny"
    Trainer(load_config("tiny", overrides), run, progress=False).train()
    return run


@pytest.fixture(scope="session")
def short_tiny_run(tmp_path_factory):
    """The tiny preset trained for 4 steps, with checkpoints at steps 2 and 4. Copy it before changing it."""
    return trained_tiny(tmp_path_factory, "short", ["train.steps=4", "train.checkpoint_every=2", "train.log_every=1",
                                                    "train.val_every=2", "train.sample_every=4"])


@pytest.fixture(scope="session")
def conditional_tiny_run(tmp_path_factory):
    """The tiny preset, class-conditional, trained for 2 steps."""
    return trained_tiny(tmp_path_factory, "conditional", ["model.conditional=true", "train.steps=2",
                                                          "train.sample_every=1000", "train.val_every=1000",
                                                          "train.checkpoint_every=1000"])


@pytest.fixture(scope="session")
def tiny_data():
    """The tiny preset's data config."""
    return DataConfig(**TINY_DATA)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, tiny_data):
    """An FD classifier for the tiny preset's images, trained for 5 steps (its features only need to exist)."""
    from ddpmlab.eval.classifier import train_classifier_to_file

    path = tmp_path_factory.mktemp("classifier") / "tiny.safetensors"
    train_classifier_to_file(tiny_data, path, steps=5, batch_size=16, progress=False)
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """DDPMLAB_CACHE (reference statistics, default classifiers) in this test's own folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DDPMLAB_CACHE", str(folder))
    return folder


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
