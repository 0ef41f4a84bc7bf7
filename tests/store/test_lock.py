"""One owner per run: RUN_DIR/.lock keeps a second process (train --force, --resume) off a run a live process trains,
is taken over from a dead one with a note, and is released however the owner ends."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ddpmlab
from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.errors import DdpmlabNote, UserError
from ddpmlab.store.lock import LOCK_FILE, RunLock
from ddpmlab.train import Trainer

# another process that holds a run's lock until its stdin closes; the lock module alone (without torch: fast)
HOLD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_module)
lock = lock_module.RunLock(sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until its stdin closes."""
    src = str(Path(ddpmlab.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lock_file = str(Path(ddpmlab.__file__).parent / "store" / "lock.py")
    process = subprocess.Popen([sys.executable, "-c", HOLD, lock_file, str(run_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    Trainer(load_config("tiny", ["train.steps=2", "train.sample_every=1000"]), run, progress=False).train()
    return run


def test_a_live_owner_keeps_others_off_the_run(run, capsys):
    owner = hold_lock(run)
    try:
        files = sorted(p.relative_to(run) for p in run.rglob("*"))
        with pytest.raises(UserError, match=rf"{run} is in use by process {owner.pid} on .* \(since .*\): one process "
                                            rf"trains a run at a time"):
            Trainer.resume(run, ["train.steps=4"], progress=False)
        assert main(["train", "tiny", "--run-dir", str(run), "--force", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {run} is in use by process {owner.pid}") and len(err.splitlines()) == 1
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == files  # --force removed nothing
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == owner.pid
    finally:
        owner.stdin.close()
        owner.wait(timeout=60)
    assert not (run / LOCK_FILE).exists()  # released on the owner's exit
    assert main(["train", "--resume", str(run), "--quiet", "train.steps=3"]) == 0


def test_a_dead_owners_lock_is_taken_over_with_a_note(run):
    owner = hold_lock(run)
    owner.send_signal(signal.SIGKILL)  # no chance to release: the file stays, the kernel drops the flock
    owner.wait(timeout=60)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == owner.pid
    with pytest.warns(DdpmlabNote, match=f"took over {re.escape(str(run / LOCK_FILE))} from process {owner.pid} on "):
        trainer = Trainer.resume(run, ["train.steps=3"], progress=False)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    trainer.train()
    assert not (run / LOCK_FILE).exists()


def test_one_process_cannot_own_a_run_twice(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.held and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(UserError, match=rf"in use by process {os.getpid()} .*\(this one\)"):
        RunLock(tmp_path)
    lock.release()
    assert not lock.held and not (tmp_path / LOCK_FILE).exists()
    lock.release()  # again: nothing
    RunLock(tmp_path).release()


def test_force_keeps_no_stale_lock_and_a_lock_alone_is_no_content(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "elsewhere"}))
    with pytest.warns(DdpmlabNote, match="took over"):  # no --force needed
        trainer = Trainer(load_config("tiny", ["train.steps=1"]), tmp_path / "run", progress=False)
    trainer.train()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
