"""Shared, built once per session: a briefly trained classifier for the tiny preset's synthetic shapes (FD)."""

import json

import pytest

from ddpmlab.cli import main


@pytest.fixture(scope="session")
def report_cache(tmp_path_factory):
    """Reference statistics go to a session folder, never ~/.cache (DDPMLAB_CACHE, set by the tests)."""
    return tmp_path_factory.getbasetemp() / "ddpmlab-cache"


@pytest.fixture(autouse=True)
def eval_cache(report_cache, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(report_cache))
    return report_cache


@pytest.fixture(scope="session")
def synthetic_classifier(tmp_path_factory, report_cache):
    """Path of a classifier trained for 150 steps on the tiny preset's synthetic shapes, via the CLI."""
    path = tmp_path_factory.mktemp("classifier") / "synthetic.safetensors"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDPMLAB_CACHE", str(report_cache))
        code = main(["eval", "train-classifier", "synthetic", "data.synthetic_count=512", "data.val_fraction=0.1",
                     "--steps", "150", "--batch-size", "64", "--out", str(path), "--quiet"])
    assert code == 0
    assert json.loads(path.with_suffix(".json").read_text())["test_accuracy"] > 0
    return path
