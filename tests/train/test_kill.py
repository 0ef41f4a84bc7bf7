"""Kill at any moment: a tiny run SIGKILLed at 20 seeded random moments (checkpoints written every step, so many
kills land in a write; if none did, up to 10 more kills follow, each at the first unfinished write it sees), resumed
with `--resume` after each, ends with exactly the weights, optimizer state and metrics of an uninterrupted run, and
leaves no temporary file, lock or damaged checkpoint behind.

Each killed session is `ddpmlab.cli.main` in a process forked from a warm Python that has already imported torch
(seconds per process otherwise); the uninterrupted run is a plain `python -m ddpmlab train` subprocess."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddpmlab
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.store.run_dir import unfinished_writes

KILLS, AIMED, STEPS, SEED = 20, 10, 40, 13
OVERRIDES = ["train.checkpoint_every=1", "train.keep_checkpoints=3", "train.log_every=1", "train.sample_every=1000",
             "train.val_every=1000"]

# Runs `ddpmlab.cli.main(argv)` in a forked child per request {"argv", "log", "kill_after", "after_start", "aim_at"}
# read from stdin; SIGKILLs it kill_after seconds after its training began (its first line on stdout), or after it was
# forked when after_start, or as soon as the run folder aim_at holds an unfinished write once training began, or never
# when kill_after and aim_at are null; answers {"killed", "code", "training_after"} on stdout.
FORK_SERVER = r"""
import json, os, signal, sys, time
import torch, matplotlib.pyplot, ddpmlab.cli, ddpmlab.train.trainer
from ddpmlab.store.run_dir import unfinished_writes
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # torch imports its compiler on an optimizer's first use
for line in sys.stdin:
    request = json.loads(line)
    start, out = time.monotonic(), request["log"] + ".out"
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, out), (2, request["log"] + ".err")):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        code = 1
        try:
            code = ddpmlab.cli.main(request["argv"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    training = deadline = None
    if request["kill_after"] is not None and request["after_start"]:
        deadline = start + request["kill_after"]
    while True:
        if training is None and os.path.exists(out) and os.path.getsize(out) > 0:
            training = time.monotonic()
            if request["kill_after"] is not None and not request["after_start"]:
                deadline = training + request["kill_after"]
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            answer = {"killed": False, "code": os.waitstatus_to_exitcode(status)}
            break
        aimed = request["aim_at"] is not None and training is not None and unfinished_writes(request["aim_at"])
        if aimed or deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            answer = {"killed": True, "code": None}
            break
        time.sleep(0.002)
    print(json.dumps({**answer, "training_after": training and training - start}), flush=True)
"""


def _env():
    src = str(Path(ddpmlab.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _newest_step(run: Path) -> int | None:
    checkpoints = ckpt.list_checkpoints(run)
    return int(ckpt.read_progress(checkpoints[-1])["step"]) if checkpoints else None


def _state(folder: Path) -> dict:
    """Every tensor of a checkpoint: weights, EMA, optimizer and RNG state."""
    optimizer = ckpt.read_tensors(folder / ckpt.OPTIMIZER_FILE)
    return {"model": ckpt.read_weights(folder / ckpt.MODEL_FILE)[0], "ema": ckpt.read_weights(folder / ckpt.EMA_FILE)[0],
            "optimizer": {group: state["state"] for group, state in optimizer.items()},
            "rng": ckpt.read_tensors(folder / ckpt.RNG_FILE)}


def _assert_equal(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}/{key}")
    else:
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b, where


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_run_killed_at_20_random_moments_ends_as_an_uninterrupted_run(tmp_path):
    run, rng = tmp_path / "killed", random.Random(SEED)
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_env())

    def session(argv, kill_after, after_start, index, aim_at=None):
        server.stdin.write(json.dumps({"argv": argv, "log": str(tmp_path / f"session{index:02d}"),
                                       "kill_after": kill_after, "after_start": after_start, "aim_at": aim_at}) + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    try:
        steps, window, startup, kills, in_a_write, in_startup = STEPS, 0.5, 1.0, 0, 0, 0
        resumed_from, trained_after_resume = [], 0  # newest checkpoint at each resume; resumes that began training
        # if no random moment fell in a write (a few % of suites on a slow day), aimed kills follow: each as soon as
        # a session's first unfinished write appears, until one lands in it
        while kills < KILLS or (in_a_write == 0 and kills < KILLS + AIMED):
            newest = _newest_step(run)
            if newest is None:  # killed before its first checkpoint: start again
                argv = ["train", "tiny", "--run-dir", str(run), "--force", "--quiet", f"train.steps={steps}", *OVERRIDES]
            else:
                assert ckpt.newest_intact(run)[0] == ckpt.list_checkpoints(run)[-1]  # a kill never damages one
                argv = ["train", "--resume", str(run), "--quiet", f"train.steps={steps}"]
                resumed_from.append(newest)
            after_start = kills % 4 == 3  # every fourth kill while the process starts (loads, cleans up, resumes)
            if kills >= KILLS and newest is not None:  # aimed: a resumed run's write, so a checkpoint stays
                answer = session(argv, None, False, kills, aim_at=str(run))
            else:
                answer = session(argv, rng.uniform(0.0, startup if after_start else window), after_start, kills)
            if not answer["killed"]:  # finished before its moment came: keep going with a longer run
                assert answer["code"] == 0, (tmp_path / f"session{kills:02d}.err").read_text()
                steps += 10
                continue
            kills += 1
            in_a_write += bool(unfinished_writes(run))
            in_startup += answer["training_after"] is None
            trained_after_resume += newest is not None and answer["training_after"] is not None
            startup = answer["training_after"] or startup
            progress = (_newest_step(run) or 0) - (newest or 0)
            window *= 1.6 if progress == 0 and not after_start else 0.6 if progress > 2 else 1.0  # ~1 step a session
        resumed_from.append(_newest_step(run))
        final = session(["train", "--resume", str(run), "--quiet", f"train.steps={steps}"], None, False, KILLS)
        assert final["code"] == 0, (tmp_path / f"session{KILLS:02d}.err").read_text()
    finally:
        server.stdin.close()
        server.wait(timeout=60)

    straight = tmp_path / "straight"
    result = subprocess.run([sys.executable, "-m", "ddpmlab", "train", "tiny", "--run-dir", str(straight), "--quiet",
                             f"train.steps={steps}", *OVERRIDES], capture_output=True, text=True, env=_env(),
                            timeout=600)
    assert result.returncode == 0, result.stderr

    _assert_equal(_state(ckpt.list_checkpoints(run)[-1]), _state(ckpt.list_checkpoints(straight)[-1]))
    columns = ("step", "loss", "lr", "grad_norm", "bad_steps")
    rows = [{c: r[c] for c in columns} for r in read_metrics(run / "metrics.csv")]
    assert rows == [{c: r[c] for c in columns} for r in read_metrics(straight / "metrics.csv")]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))

    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock" or ".damaged" in p.name]
    assert leftovers == [] and unfinished_writes(run) == []
    assert [p.name for p in ckpt.list_checkpoints(run)] == [f"step_{s:07d}" for s in range(steps - 2, steps + 1)]
    # every session that got as far as its log line resumed from the newest complete checkpoint of its moment
    logged = [int(s) for s in re.findall(r"resumed at step (\d+)", (run / "run.log").read_text())]
    expected = iter(resumed_from)
    assert all(any(step == e for e in expected) for step in logged), (logged, resumed_from)
    assert logged[-1] == resumed_from[-1] and len(logged) >= trained_after_resume + 1
    print(f"\n{kills} kills: {in_startup} before training began, {in_a_write} during a write; "
          f"{len(logged)} resumes logged; {steps} steps")
    assert in_a_write >= 1
