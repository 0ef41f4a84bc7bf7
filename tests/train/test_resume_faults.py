"""A run survives damaged checkpoints and a full or read-only disk: resume falls back to the newest intact
checkpoint and says so; sample and eval refuse a damaged one; a checkpoint that cannot be written stops the run with
a UserError and leaves the previous one intact."""

import errno
import os
import shlex
import shutil

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.load import load_trained
from ddpmlab.store.metrics_csv import MetricsLog, read_metrics
from ddpmlab.train import Trainer


def tiny(*overrides):
    return load_config("tiny", ["train.checkpoint_every=2", "train.sample_every=1000", "train.log_every=2",
                                *overrides])


def _flip_bit(path, position=-9):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def _states_equal(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The model and EMA weights of an uninterrupted 8-step run."""
    trainer = Trainer(tiny("train.steps=8"), tmp_path_factory.mktemp("straight") / "run", progress=False)
    trainer.train()
    return trainer.model.state_dict(), trainer.ema.shadow.state_dict()


def test_resume_falls_back_past_damaged_checkpoints_and_still_matches(tmp_path, straight):
    run = tmp_path / "run"
    Trainer(tiny("train.steps=6"), run, progress=False).train()  # checkpoints 2, 4, 6
    _flip_bit(run / "checkpoints" / "step_0000006" / ckpt.MODEL_FILE)
    (run / "checkpoints" / "step_0000004" / ckpt.RNG_FILE).write_bytes(b"")
    with pytest.warns(DdpmlabWarning) as warned:
        resumed = Trainer.resume(run, ["train.steps=8"], progress=False)
    assert resumed.step == 2
    err = "\n".join(f"warning: {w.message}" for w in warned if w.category is DdpmlabWarning)
    assert "warning: checkpoint step_0000006 is damaged" in err and "model.safetensors: damaged, its SHA-256" in err
    assert "warning: checkpoint step_0000004 is damaged" in err and "rng.pt: damaged (truncated)" in err
    assert "resumed from step_0000002 instead" in err
    log = (run / "run.log").read_text()
    assert log.count("is damaged") == 2 and "moved the damaged one to checkpoints/step_0000006.damaged" in log
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000002", "step_0000004.damaged", "step_0000006.damaged"]
    resumed.train()
    _states_equal(resumed.model.state_dict(), straight[0])  # the fallback loses steps, not determinism
    _states_equal(resumed.ema.shadow.state_dict(), straight[1])
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == [2, 4, 6, 8]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000004", "step_0000006", "step_0000008"]

    for folder in ckpt.list_checkpoints(run):
        _flip_bit(folder / ckpt.EMA_FILE)
    with pytest.raises(UserError, match=r"no checkpoint to resume from; step_0000008 is damaged: .*ema.safetensors"):
        Trainer.resume(run, progress=False)
    assert not (run / ".lock").exists()  # released after the failed resume


def test_a_session_killed_between_its_last_write_and_the_pruning_is_pruned_on_resume(tmp_path):
    """The state a kill leaves after checkpoint 6 of 6 is written but before the old ones are deleted (and before
    run.log says finished): resuming trains nothing, so it must prune by itself."""
    run = tmp_path / "run"
    Trainer(tiny("train.steps=6", "train.keep_checkpoints=2"), run, progress=False).train()  # checkpoints 4, 6
    shutil.copytree(run / "checkpoints" / "step_0000004", run / "checkpoints" / "step_0000002")  # not yet deleted
    log = run / "run.log"
    log.write_text("".join(line for line in log.read_text().splitlines(keepends=True) if "finished" not in line))
    newest = ckpt.read_weights(run / "checkpoints" / "step_0000006" / ckpt.EMA_FILE)[0]
    resumed = Trainer.resume(run, progress=False)
    resumed.train()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000004", "step_0000006"]
    assert "deleted 1 checkpoint(s) beyond train.keep_checkpoints=2" in log.read_text()
    _states_equal(ckpt.read_weights(run / "checkpoints" / "step_0000006" / ckpt.EMA_FILE)[0], newest)


def test_sample_and_eval_refuse_a_damaged_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny("train.steps=2"), run, progress=False).train()
    ema = run / "checkpoints" / "step_0000002" / ckpt.EMA_FILE
    load_trained(run)  # intact
    _flip_bit(ema)
    capsys.readouterr()
    for argv in (["sample", run, "--n", "2", "--out", tmp_path / "s.png", "--quiet"],
                 ["eval", run, "--metrics", "speed", "--n", "2", "--quiet"]):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {ema}: damaged, its SHA-256 differs") and len(err.splitlines()) == 1, err
    assert main(["sample", str(run), "--no-ema", "--n", "2", "--out", str(tmp_path / "raw.png"), "--quiet"]) == 0
    (run / "checkpoints" / "step_0000002" / ckpt.PROGRESS_FILE).write_text('{"format": "ddpmlab-checkpoint-1", '
                                                                            '"step": 3}')
    with pytest.raises(UserError, match=r"progress.json: damaged \(truncated\)"):
        load_trained(run, use_ema=False)


def test_a_checkpoint_on_a_full_disk_stops_the_run_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_write = ckpt._write_synced

    def fills_the_disk(path, data):
        if "step_0000004" in path.parent.name:
            path.write_bytes(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", fills_the_disk)
    assert main(["train", "tiny", "--run-dir", str(run), "--quiet", "train.steps=6", "train.checkpoint_every=2",
                 "train.sample_every=1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: cannot write checkpoint {run}/checkpoints/"
                                                         f"step_0000004: the disk is full (No space left on device)")
    assert "its newest checkpoint step_0000002 is intact" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002"]  # no temporary folder
    assert not (run / ".lock").exists()
    _, _, _, step = load_trained(run)
    assert step == 2
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # space freed: the run continues
    assert [p.name for p in ckpt.list_checkpoints(run)][-1] == "step_0000006"


def test_a_full_disk_at_the_first_checkpoint_suggests_a_command_that_works(tmp_path, monkeypatch, capsys):
    """Issue 23: with no checkpoint yet, `--resume` cannot work; the suggestion starts the run again in its folder."""
    run = tmp_path / "run"
    real_write = ckpt._write_synced

    def fills_the_disk(path, data):
        if "step_0000002" in path.parent.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", fills_the_disk)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "tiny", "--run-dir", str(run), "--quiet", "train.steps=4", "train.checkpoint_every=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "it has no checkpoint yet" in err and "--resume" not in err
    monkeypatch.setattr(ckpt, "_write_synced", real_write)  # space freed
    suggested = shlex.split(err.split("`")[1])
    assert suggested[:2] == ["ddpmlab", "train"]
    assert main([*suggested[1:], "--quiet"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(run)][-1] == "step_0000004"
    assert load_config(str(run / "config.yaml")).train.steps == 4


def test_a_full_disk_elsewhere_in_the_run_is_a_user_error(tmp_path, monkeypatch):
    def full(self, **row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    trainer = Trainer(tiny("train.steps=4"), tmp_path / "run", progress=False)
    monkeypatch.setattr(MetricsLog, "append", full)
    with pytest.raises(UserError, match=rf"cannot write to the run directory {tmp_path / 'run'} "
                                        rf"\({tmp_path / 'run' / 'metrics.csv'}\): the disk is full"):
        trainer.train()
    assert not (tmp_path / "run" / ".lock").exists()


def _writes_through_read_only_modes(folder) -> bool:
    """True for root (with CAP_DAC_OVERRIDE), for whom chmod does not make a folder read-only."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
        return True
    except PermissionError:
        return False
    finally:
        folder.chmod(0o755)


def test_a_read_only_checkpoint_folder_stops_the_run_and_keeps_the_previous(tmp_path):
    if _writes_through_read_only_modes(tmp_path / "probe"):
        pytest.skip("this user (root) writes through read-only modes: chmod cannot make a folder read-only")
    run = tmp_path / "run"
    Trainer(tiny("train.steps=2"), run, progress=False).train()
    (run / "checkpoints").chmod(0o555)
    try:
        trainer = Trainer.resume(run, ["train.steps=4"], progress=False)
        with pytest.raises(UserError, match=rf"cannot write checkpoint {run}/checkpoints/step_0000004: no permission "
                                            rf"to write there .*step_0000002 is intact"):
            trainer.train()
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000002"]
        ckpt.verify_checkpoint(run / "checkpoints" / "step_0000002")
        run.chmod(0o555)  # the run directory itself: not even its lock can be taken
        with pytest.raises(UserError, match=rf"cannot write the lock file of {run}.*make {run} writable"):
            Trainer.resume(run, ["train.steps=4"], progress=False)
    finally:
        run.chmod(0o755)
        (run / "checkpoints").chmod(0o755)


def test_a_read_only_file_system_stops_the_run_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    """The read-only case that also bites root: the file system refuses the write (EROFS), simulated."""
    run = tmp_path / "run"
    real_write = ckpt._write_synced

    def read_only(path, data):
        if "step_0000004" in path.parent.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", read_only)
    assert main(["train", "tiny", "--run-dir", str(run), "--quiet", "train.steps=6", "train.checkpoint_every=2",
                 "train.sample_every=1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: cannot write checkpoint {run}/checkpoints/step_0000004")
    assert "step_0000002 is intact" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002"]
    ckpt.verify_checkpoint(run / "checkpoints" / "step_0000002")
