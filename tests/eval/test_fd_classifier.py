"""Training, saving, finding and loading the FD classifier."""

import json
import shlex

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import DataConfig
from ddpmlab.eval import classifier as clf
from ddpmlab.eval.cache import dataset_key
from ddpmlab.eval.classifier import classifier_lr, held_out_split, load_classifier, save_classifier, train_classifier

TINY = DataConfig(name="synthetic", synthetic_count=512, val_fraction=0.1)


def test_short_training_on_synthetic_beats_chance(synthetic_classifier):
    path, facts = synthetic_classifier
    # 4 shapes: chance is 0.25; 150 steps reach well above it on the 51 held-out images
    assert facts["test_accuracy"] > 0.6 and facts["test_split"] == "val"
    assert facts["steps"] == 150 and facts["command"].startswith("ddpmlab eval train-classifier synthetic")
    # filed under the training subset (val_fraction included): the reference is the val split carved out of train
    assert facts["extractor_id"].startswith(f"classifier-{dataset_key(TINY, 'train')}-v1-")
    assert facts["data"]["val_fraction"] == 0.1


def test_saved_classifier_loads_with_the_same_weights_and_accuracy(synthetic_classifier, tmp_path):
    path, facts = synthetic_classifier
    model, loaded = load_classifier(path)
    assert loaded["extractor_id"] == facts["extractor_id"] and loaded["test_accuracy"] == facts["test_accuracy"]
    assert loaded["dataset"] == "synthetic" and loaded["spec"]["in_channels"] == 3 and not model.training
    # the accuracy reported is the accuracy of the file's weights
    from ddpmlab.data import load_dataset

    assert clf.accuracy(model, load_dataset(TINY, "val")) == facts["test_accuracy"]
    # a second save of the same weights keeps the id: it names the weights, not the file
    save_classifier(model, tmp_path / "copy.safetensors", TINY, loaded["test_accuracy"])
    assert load_classifier(tmp_path / "copy.safetensors")[1]["extractor_id"] == facts["extractor_id"]


def test_training_is_deterministic_for_a_seed():
    a, acc_a = train_classifier(TINY, steps=5, batch_size=16, seed=3, progress=False)
    b, acc_b = train_classifier(TINY, steps=5, batch_size=16, seed=3, progress=False)
    assert acc_a == acc_b
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_lr_warms_up_then_decays_to_zero():
    assert classifier_lr(0, 1000, 1.0, 100) == pytest.approx(0.01)
    assert classifier_lr(99, 1000, 1.0, 100) == pytest.approx(1.0)
    assert classifier_lr(550, 1000, 1.0, 100) == pytest.approx(0.5)
    assert classifier_lr(1000, 1000, 1.0, 100) == pytest.approx(0.0)


def test_held_out_split_is_test_where_the_dataset_has_one():
    assert held_out_split(DataConfig(name="fashion-mnist")) == "test"
    assert held_out_split(DataConfig(name="synthetic")) == "val"


def test_missing_classifier_names_the_command_that_makes_one(monkeypatch):
    monkeypatch.setattr(clf, "shipped_classifier", lambda key: None)
    with pytest.raises(UserError, match="ddpmlab eval train-classifier synthetic data.val_fraction=0.1 data.synthetic_count=512$"):
        load_classifier(TINY)
    with pytest.raises(UserError, match="classifier file not found"):
        load_classifier("absent.safetensors")


def test_the_suggested_train_classifier_command_carries_the_users_data_overrides(monkeypatch):
    """Issue 23: a folder dataset read with data.on_bad_image=skip: the suggestion must load the same images."""
    from ddpmlab.commands.evaluate import data_config

    monkeypatch.setattr(clf, "shipped_classifier", lambda key: None)
    data = DataConfig(name="folder", path="/my images/set", on_bad_image="skip", image_size=32, val_fraction=0.05)
    with pytest.raises(UserError) as caught:
        clf.find_classifier(data)
    command = str(caught.value).split("train one: ")[1]
    assert command == ("ddpmlab eval train-classifier folder 'data.path=/my images/set' data.image_size=32 "
                       "data.val_fraction=0.05 data.on_bad_image=skip")
    assert data_config("folder", shlex.split(command)[4:]) == data  # what the command reads back


def test_altered_weights_are_refused(synthetic_classifier, tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    path, _ = synthetic_classifier
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(path))
    state["head.bias"] = state["head.bias"] + 1
    save_file(state, str(tmp_path / "altered.safetensors"), metadata=metadata)
    with pytest.raises(UserError, match="do not match their extractor id"):
        load_classifier(tmp_path / "altered.safetensors")


def test_shipped_fashion_mnist_classifier_is_found_and_documented():
    path = clf.shipped_classifier("fashion-mnist")
    if path is None:
        pytest.skip("no classifier shipped for fashion-mnist in this checkout")
    model, facts = load_classifier("fashion-mnist")
    assert facts["path"] == str(path) and path.stat().st_size < 2 * 2**20
    assert facts["test_accuracy"] >= 0.9 and facts["test_split"] == "test"
    assert json.loads(path.with_suffix(".json").read_text())["test_accuracy"] == facts["test_accuracy"]
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, model.feature_dim)
