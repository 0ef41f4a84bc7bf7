"""train.tensorboard: RUN_DIR/tensorboard holds metrics.csv's scalars and the sample grids; without the package, one
error line before anything is written."""

import sys

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.images import make_grid
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer


def scalars(folder):
    """{tag: [(step, value), ...]} of every events file in `folder`, as TensorBoard would show them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def test_tensorboard_mirrors_metrics_csv_and_the_grids_and_survives_resume(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install -e .[tensorboard])")
    run = tmp_path / "run"
    overrides = ["train.tensorboard=true", "train.sample_every=10", "train.sample_n=4"]
    Trainer(load_config("tiny", ["train.steps=10", *overrides]), run, progress=False).train()
    Trainer.resume(run, ["train.steps=15"], progress=False).train()
    rows = read_metrics(run / "metrics.csv")
    logged, events = scalars(run / "tensorboard")
    expected = {column: [(r["step"], r[column]) for r in rows if r[column] is not None]
                for column in rows[0] if column != "step"}
    expected = {column: points for column, points in expected.items() if points}
    assert set(logged) == set(expected) and [step for step, _ in logged["loss"]] == [5, 10, 15]
    for column, points in expected.items():
        assert [step for step, _ in logged[column]] == [step for step, _ in points], column
        assert [value for _, value in logged[column]] == pytest.approx([v for _, v in points], rel=1e-5), column
    grids = events.Images("samples")
    assert [g.step for g in grids] == [10, 15]  # the grid every 10 steps and the final one
    height, width, _ = make_grid(torch.zeros(4, 3, 16, 16)).shape
    assert (grids[0].height, grids[0].width) == (height, width)


def test_without_the_package_the_run_is_refused_before_it_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails, as when not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    assert main(["train", "tiny", "train.tensorboard=true", "--run-dir", str(run), "--quiet"]) == 2
    assert capsys.readouterr().err == ("error: train.tensorboard=true needs the tensorboard package: "
                                       "pip install 'ddpmlab[tensorboard]'\n")
    assert not run.exists()
