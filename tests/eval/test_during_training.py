"""Evaluation during training (train.eval_every) and the best checkpoint (train.keep_best), on the tiny preset with a
briefly trained classifier for its synthetic shapes."""

import json

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.commands.evaluate import evaluate_run
from ddpmlab.config import load_config
from ddpmlab.errors import UserError
from ddpmlab.eval.classifier import train_classifier_to_file
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer

EVAL = ["train.eval_every=4", "train.eval_n=16", "train.eval_steps=4"]


def tiny(*overrides):
    return load_config("tiny", ["train.steps=20", *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache holding the FD classifier of the tiny preset's images (10 steps: a feature map, not a good one)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDPMLAB_CACHE", str(folder))
        train_classifier_to_file(tiny().data, steps=10, batch_size=32, progress=False)
    return folder


@pytest.fixture
def with_classifier(cache, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(cache))


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    """The same 20 steps trained without and with evaluation (every 4 steps, the best kept, 1 newest checkpoint)."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDPMLAB_CACHE", str(cache))
        plain = Trainer(tiny(), folder / "plain", progress=False)
        plain.train()
        evaluated = Trainer(tiny(*EVAL, "train.keep_best=true", "train.keep_checkpoints=1"), folder / "eval",
                            progress=False)
        evaluated.train()
    return plain, evaluated


def test_evaluation_does_not_change_the_training(runs):
    plain, evaluated = runs
    for a, b in zip(plain.model.state_dict().values(), evaluated.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(plain.ema.shadow.state_dict().values(), evaluated.ema.shadow.state_dict().values()):
        assert torch.equal(a, b)
    rows = read_metrics(evaluated.run_dir / "metrics.csv")
    assert [r["step"] for r in rows if r["fd"] is not None] == [4, 8, 12, 16, 20]
    assert [r["step"] for r in rows] == [4, 5, 8, 10, 12, 15, 16, 20]  # an evaluated step is always logged
    assert all(r["loss"] is not None for r in rows)
    assert "fd" not in read_metrics(plain.run_dir / "metrics.csv")[0]


def test_the_logged_fd_is_what_ddpmlab_eval_measures(runs, with_classifier):
    _, evaluated = runs
    rows = read_metrics(evaluated.run_dir / "metrics.csv")
    protocol = dict(metrics="fd", n=16, seed=0, progress=False)
    last = evaluate_run(evaluated.run_dir, SamplingSettings("dpm-solver++", 4), **protocol,
                        out=evaluated.run_dir / "check")
    assert last["metrics"]["fd_classifier"] == pytest.approx(rows[-1]["fd"], rel=1e-5)


def test_the_best_checkpoint_is_kept_through_the_rotation_and_samples(runs, with_classifier, tmp_path):
    _, evaluated = runs
    run = evaluated.run_dir
    rows = [r for r in read_metrics(run / "metrics.csv") if r["fd"] is not None]
    best_row = min(rows, key=lambda r: r["fd"])
    record = ckpt.read_best(run)
    assert record["step"] == best_row["step"] and record["metric"] == "fd"
    assert record["score"] == pytest.approx(best_row["fd"], rel=1e-5)
    assert record["protocol"]["n"] == 16 and record["protocol"]["nfe"] == 4
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000020"]  # keep_checkpoints=1
    best = run / "checkpoints" / "best"
    assert json.loads((best / "progress.json").read_text())["step"] == best_row["step"]
    again = evaluate_run(best, SamplingSettings("dpm-solver++", 4), metrics="fd", n=16, seed=0, progress=False,
                         out=tmp_path / "best")
    assert again["metrics"]["fd_classifier"] == pytest.approx(best_row["fd"], rel=1e-5)
    assert main(["sample", str(best), "--out", str(tmp_path / "best.png"), "--n", "4", "--quiet"]) == 0


def test_switching_evaluation_on_at_resume_adds_the_column(cache, with_classifier, tmp_path):
    Trainer(load_config("tiny", ["train.steps=10"]), tmp_path / "run", progress=False).train()
    resumed = Trainer.resume(tmp_path / "run", ["train.steps=15", "train.eval_every=15", "train.eval_n=8",
                                                "train.eval_steps=4"], progress=False)
    resumed.train()
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == [5, 10, 15]
    assert rows[0]["fd"] is None and rows[1]["fd"] is None and rows[2]["fd"] > 0


def test_is_best_compares_like_with_like(runs):
    _, evaluated = runs
    quality = evaluated.quality
    record = quality.best_record({"fd": 4.0}, 8)
    stored = json.loads(json.dumps(record))
    assert quality.is_best({"fd": 3.9}, stored) and not quality.is_best({"fd": 4.1}, stored)
    assert quality.is_best({"fd": 9.0}, None) and not quality.is_best({"fd": float("nan")}, None)
    other = {**stored, "protocol": {**stored["protocol"], "n": 500}}  # measured another way: no longer the bar
    assert quality.is_best({"fd": 9.0}, other)


def test_evaluation_without_a_classifier_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError, match=r"train\.eval_every=4 scores samples by fd: no FD classifier"):
        Trainer(tiny(*EVAL), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, key", [
    (["train.keep_best=true"], "train.keep_best"),
    (["train.eval_every=5", "train.eval_metrics=fd,is"], "train.eval_metrics"),
    (["train.eval_every=5", "train.eval_sampler=euler"], "train.eval_sampler"),
    (["train.eval_every=5", "train.eval_n=1"], "train.eval_n"),
    (["train.eval_every=-1"], "train.eval_every"),
])
def test_bad_evaluation_keys_are_named(overrides, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        tiny(*overrides)


def test_more_eval_steps_than_timesteps_is_named(tmp_path):
    with pytest.raises(UserError, match=r"train\.eval_steps: 200 is more than the model's 100 timesteps"):
        Trainer(tiny("train.eval_every=5", "train.eval_steps=200"), tmp_path / "run", progress=False)
