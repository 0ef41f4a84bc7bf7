"""A run directory belongs to the user: --force removes only what ddpmlab wrote; nothing is written before a
config is known to work; resume refuses what would silently change the run."""

import pytest
import yaml

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.errors import DdpmlabNote, DdpmlabWarning, UserError
from ddpmlab.store.manifest import MANIFEST_FILE, is_recorded, recorded
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer


def tiny(*overrides):
    return load_config("tiny", list(overrides))


def test_force_removes_the_old_run_and_keeps_the_users_files(tmp_path, capsys):
    run = tmp_path / "proj"
    Trainer(tiny("train.steps=10"), run, progress=False).train()
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    (run / "data" / "keep.npy").write_bytes(b"x")
    (run / "samples" / "favourite.png").write_bytes(b"png")
    old_checkpoint = run / "checkpoints" / "step_0000010"
    assert old_checkpoint.is_dir()
    assert main(["train", "tiny", "train.steps=5", "--run-dir", str(run), "--force", "--quiet"]) == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "data" / "keep.npy").read_bytes() == b"x"
    assert (run / "samples" / "favourite.png").read_bytes() == b"png"
    assert not old_checkpoint.exists() and (run / "checkpoints" / "step_0000005").is_dir()
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == [5]
    assert "kept 3 file(s) ddpmlab did not write" in capsys.readouterr().err


def test_force_refuses_a_folder_that_holds_no_run(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not a ddpmlab run"):
        Trainer(tiny(), folder, force=True, progress=False)
    assert (folder / "a.jpg").read_bytes() == b"x"


def test_batch_larger_than_the_dataset_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="train.batch_size=100000 is larger than the 461 training images"):
        Trainer(tiny("train.batch_size=100000"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_run_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="lies under .*file, which is a file"):
        Trainer(tiny(), tmp_path / "file" / "run", progress=False)


def test_grids_are_sampled_with_the_configs_parameterisation(tmp_path, monkeypatch, conv_backbone):
    """A custom backbone has no `.prediction`: the grid sampler must take it from the config."""
    from ddpmlab.methods import (
        ddpm as ddpm_module,  # where the trainer's grids are sampled
    )

    seen = []
    real_sample = ddpm_module.sample
    monkeypatch.setattr(ddpm_module, "sample", lambda *a, **k: seen.append(a[3].prediction) or real_sample(*a, **k))

    Trainer(tiny("diffusion.prediction=v", "train.steps=20"), tmp_path / "run", model=conv_backbone, progress=False).train()
    assert seen == ["v"]


def test_resume_names_keys_and_shapes_that_differ(tmp_path):
    Trainer(tiny("train.steps=10"), tmp_path / "run", progress=False).train()
    with pytest.raises(UserError, match="cannot change model.channels on --resume"):
        Trainer.resume(tmp_path / "run", ["model.channels=32", "model.groups=8"], progress=False)
    wider = Trainer(tiny("model.channels=24", "train.steps=1"), tmp_path / "other", progress=False).model
    with pytest.raises(UserError, match=r"does not fit this model: shapes differ \(127\): time_mlp.0.weight: checkpoint 64×16, model 96×24"):
        Trainer.resume(tmp_path / "run", model=wider, progress=False)


def test_resume_below_the_current_step_is_refused_and_config_kept(tmp_path):
    Trainer(tiny("train.steps=10"), tmp_path / "run", progress=False).train()
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(UserError, match="train.steps=5 is below the run's step 10"):
        Trainer.resume(tmp_path / "run", ["train.steps=5"], progress=False)
    with pytest.raises(UserError, match="diffusion.prediction"):
        Trainer.resume(tmp_path / "run", ["diffusion.prediction=v"], progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_a_schedule_far_from_noise_is_warned_about_once_as_a_warning_and_in_run_log(tmp_path, recwarn):
    Trainer(tiny("train.steps=1", "diffusion.beta_start=1e-4", "diffusion.beta_end=0.02"), tmp_path / "a", progress=False)
    warned = [str(w.message) for w in recwarn if w.category is DdpmlabWarning]
    assert [m.startswith("the noise schedule ends at alpha_bar_T = 0.364") for m in warned] == [True]
    assert "warning: the noise schedule ends at alpha_bar_T = 0.364" in (tmp_path / "a" / "run.log").read_text()
    recwarn.clear()
    Trainer(tiny("train.steps=1"), tmp_path / "b", progress=False)  # the scaled default: no warning
    assert not [w for w in recwarn if w.category is DdpmlabWarning]
    assert "parameters" in (tmp_path / "b" / "run.log").read_text()


def test_force_takes_a_run_killed_while_writing_its_config(tmp_path):
    """A run killed before its config.yaml was in place left only a stale lock and the config's temporary file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text('{"pid": 1, "host": "elsewhere"}')
    (run / MANIFEST_FILE).write_text("# files\nconfig.yaml\n")  # the manifest comes first, then what it lists
    (run / ".config.yaml.0a1b2c3d.tmp").write_text("data:\n")
    with pytest.raises(UserError, match="already exists; use --force"):
        Trainer(tiny("train.steps=1"), run, progress=False)
    with pytest.warns(DdpmlabNote, match="took over"):  # pid 1 on another host: a lock no running process holds
        Trainer(tiny("train.steps=1"), run, force=True, progress=False).train()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", MANIFEST_FILE, "loss.png",
                                                     "metrics.csv", "run.log", "samples"]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_refuses_a_folder_of_the_users_own_files_named_like_a_runs(tmp_path, capsys):
    """Issue 23: a commented config.yaml, a hand-made metrics.csv and notes, and no run: --force touches nothing."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("# my settings\ntrain:\n  steps: 3\n")
    (folder / "metrics.csv").write_text("step,loss\n1,0.5\n")
    (folder / "notes.txt").write_text("notes")
    before = _files(folder)
    assert main(["train", "tiny", "train.steps=2", "--run-dir", str(folder), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {folder} is not empty and not a ddpmlab run")
    assert _files(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(before)


def test_force_removes_exactly_what_ddpmlab_wrote_eval_results_included(tmp_path, capsys, monkeypatch):
    """Every writer into a run folder records its files in the manifest; --force removes those and keeps the user's
    eval/my-analysis.json."""
    from ddpmlab.commands import evaluate

    run = tmp_path / "run"
    Trainer(tiny("train.steps=4", "train.checkpoint_every=2", "train.sample_every=2", "train.tensorboard=true"), run,
            progress=False).train()
    monkeypatch.setattr(evaluate, "needed_extractors", lambda *args: ({}, {}))  # samples kept, no classifier needed
    assert main(["eval", str(run), "--metrics", "fd,speed", "--n", "2", "--steps", "2", "--batch-size", "2",
                 "--speed-repeats", "1", "--device", "cpu", "--quiet"]) == 0
    (run / "eval" / "my-analysis.json").write_text("{}")
    listed = recorded(run)
    written = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    unlisted = [name for name in written if name not in (MANIFEST_FILE, "eval/my-analysis.json")
                and not any(is_recorded("/".join(name.split("/")[:depth]), listed) for depth in (1, 2, 3))]
    assert unlisted == [] and any(name.startswith("tensorboard/events.out") for name in listed)
    assert {name.rsplit(".", 1)[-1] for name in listed if name.startswith("eval/")} == {"json", "npz"}
    capsys.readouterr()
    assert main(["train", "tiny", "train.steps=1", "--run-dir", str(run), "--force", "--quiet"]) == 0
    assert (run / "eval" / "my-analysis.json").read_text() == "{}"
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["my-analysis.json"]
    assert "kept 1 file(s) ddpmlab did not write: eval/my-analysis.json" in capsys.readouterr().err
    assert not (run / "tensorboard").exists() and [r["step"] for r in read_metrics(run / "metrics.csv")] == [1]


def test_resume_compares_with_the_checkpoints_config_not_the_editable_file(tmp_path, capsys):
    """Issue 23: config.yaml edited (diffusion.timesteps 100 -> 200) must not resume one model under two processes."""
    run = tmp_path / "run"
    Trainer(tiny("train.steps=2", "diffusion.timesteps=100"), run, progress=False).train()
    edited = yaml.safe_load((run / "config.yaml").read_text())
    edited["diffusion"]["timesteps"], edited["model"]["dropout"] = 200, 0.3
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    before = _files(run)
    assert main(["train", "--resume", str(run), "train.steps=4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: cannot change model.dropout on --resume (0.1 -> 0.3), nor diffusion.timesteps "
                          f"(100 -> 200) by editing {run / 'config.yaml'}: they define the model")
    assert _files(run) == before


def test_resume_of_a_finished_run_says_nothing_was_trained(tmp_path, capsys):
    """Issue 23: --resume of a run at train.steps is an error naming train.steps, and writes nothing; a run killed
    after its last checkpoint but before its end (no "finished" note) still resumes, to write its last grid."""
    run = tmp_path / "run"
    Trainer(tiny("train.steps=2"), run, progress=False).train()
    before = _files(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {run} already finished at step 2 (train.steps=2): nothing to train; to train on, "
                          f"raise train.steps, e.g. `ddpmlab train --resume {run} train.steps=4`")
    assert _files(run) == before
    (run / "samples" / "step_0000002.png").unlink()
    log = (run / "run.log").read_text().splitlines(keepends=True)
    (run / "run.log").write_text("".join(log[:-1]))  # killed before its last grid
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (run / "samples" / "step_0000002.png").is_file()
