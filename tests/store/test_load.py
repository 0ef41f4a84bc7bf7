"""Loading trained weights from what `sample` and `eval` accept: a lone weights file rebuilds from its metadata,
and a file that holds no weights is named for what it is."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.train import Trainer

QUIET = ["train.steps=2", "train.sample_every=1000", "train.val_every=1000", "train.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step tiny run."""
    folder = tmp_path_factory.mktemp("load") / "run"
    Trainer(load_config("tiny", QUIET), folder, progress=False).train()
    return folder


@pytest.fixture
def loose(run, tmp_path):
    """The run's EMA weights copied out of their checkpoint folder, alone in a folder."""
    path = tmp_path / "loose.safetensors"
    shutil.copy(ckpt.list_checkpoints(run)[-1] / ckpt.EMA_FILE, path)
    return path


def sampled(source, out, capsys) -> tuple[np.ndarray, str]:
    assert main(["sample", str(source), "--n", "2", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    return np.load(out)["images"], capsys.readouterr().out


def test_a_lone_weights_file_samples_as_its_checkpoint_does(run, loose, tmp_path, capsys):
    alone, said = sampled(loose, tmp_path / "alone.npz", capsys)
    in_run, _ = sampled(run, tmp_path / "run.npz", capsys)
    np.testing.assert_array_equal(alone, in_run)
    assert "from loose.safetensors at step 2 " in said


def test_eval_of_a_lone_weights_file_writes_beside_it(loose, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(loose), "--metrics", "speed", "--speed-repeats", "1", "--steps", "2", "--n", "2",
                 "--quiet"]) == 0
    results = json.loads(next((tmp_path / "eval" / "loose").glob("*.json")).read_text())
    assert results["settings"]["checkpoint_step"] == 2 and results["metrics"]["sampling_images_per_s"] > 0


@pytest.mark.parametrize("key,what", [("config", "the run's config"), ("model_spec", "the network's shape"),
                                      ("step", "the training step")])
def test_a_lone_weights_file_without_its_metadata_names_what_is_missing(loose, key, what, tmp_path, capsys):
    with open(loose, "rb") as handle:  # the metadata, without reading the tensors through torch
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    metadata = {k: v for k, v in header["__metadata__"].items() if k != key}
    save_file(load_file(loose), loose, metadata=metadata)
    assert main(["sample", str(loose), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == (f"error: {loose}: its metadata has no '{key}' ({what}), which loading the "
                                       f"weights needs; use the checkpoint folder or run directory it came from\n")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", [["sample", "--out", "x.png"], ["eval"]])
def test_a_runs_config_file_is_named_as_such(run, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([command[0], str(run / "config.yaml"), *command[1:]]) == 2
    assert capsys.readouterr().err == (f"error: {run / 'config.yaml'} is a config file, not trained weights; give its "
                                       f"run directory {run}\n")
    assert main([command[0], str(run / "run.log"), *command[1:]]) == 2
    assert "run.log is not a weights file (.safetensors, or an original DDPM port's .ckpt/.pt/.pth)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
