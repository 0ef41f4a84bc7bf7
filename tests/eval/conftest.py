"""Shared, built once per session: a tiny trained run and a briefly trained classifier for its synthetic data."""

import pytest

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.train import Trainer

# the tiny preset's images: FD needs a classifier trained on the same dataset
TINY_DATA = ["data.synthetic_count=512", "data.val_fraction=0.1"]


@pytest.fixture(autouse=True)
def eval_cache(tmp_path_factory, monkeypatch):
    """Reference statistics and default classifiers go to a session folder, never ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "ddpmlab-cache"
    monkeypatch.setenv("DDPMLAB_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "tiny"
    Trainer(load_config("tiny"), run, progress=False).train()
    return run


@pytest.fixture(scope="session")
def synthetic_classifier(tmp_path_factory):
    """(path, facts JSON) of a classifier trained for 150 steps on the tiny preset's synthetic shapes, via the CLI."""
    import json

    path = tmp_path_factory.mktemp("classifier") / "synthetic.safetensors"
    code = main(["eval", "train-classifier", "synthetic", *TINY_DATA, "--steps", "150", "--batch-size", "64",
                 "--out", str(path), "--quiet"])
    assert code == 0
    return path, json.loads(path.with_suffix(".json").read_text())
