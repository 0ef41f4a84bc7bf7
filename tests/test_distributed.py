"""Data parallelism: the pure pieces of ddpmlab.distributed, then 2 gloo processes started by torchrun on the
CPU, which must train to the weights of one process at the same global batch, resume, and share sampling."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ddpmlab
from ddpmlab import distributed
from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.distributed import Processes
from ddpmlab.errors import UserError
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer

ALONE = Processes()


# -- the pure pieces --------------------------------------------------------------------------------------------
def test_the_global_batch_splits_into_equal_contiguous_shares_or_is_refused():
    assert [(r.start, r.stop, r.total) for r in (distributed.batch_rows(16, Processes(rank, 4)) for rank in range(4))] \
        == [(0, 4, 16), (4, 8, 16), (8, 12, 16), (12, 16, 16)]
    assert len(distributed.batch_rows(16, ALONE)) == 16
    with pytest.raises(UserError, match=r"train.batch_size=15 .* 2 processes; use a multiple of 2"):
        distributed.batch_rows(15, Processes(1, 2))


def test_one_process_needs_no_collective():
    """Without a process group every helper answers at once (a collective here would raise: none is initialised)."""
    assert distributed.current() == ALONE and ALONE.is_main and not Processes(1, 2).is_main
    net = torch.nn.Linear(2, 1)
    net(torch.ones(1, 2)).sum().backward()
    before = [p.grad.clone() for p in net.parameters()]
    distributed.average_gradients(net.parameters(), ALONE)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, net.parameters()))
    assert distributed.mean_over_processes({"loss": 0.5}, ALONE) == {"loss": 0.5}
    assert distributed.any_process(True, ALONE) and not distributed.any_process(False, ALONE)
    assert distributed.on_main(lambda: 7, ALONE) == 7 and distributed.from_main(3, ALONE) == 3
    assert distributed.gather_to_main("x", ALONE) == ["x"]
    assert distributed.gather_rng_states(torch.device("cpu"), ALONE) == {}


def test_torchrun_environment(monkeypatch):
    assert distributed.launched_processes({}) == 1
    assert distributed.launched_processes({"WORLD_SIZE": "4"}) == 4
    with pytest.raises(UserError, match="WORLD_SIZE"):
        distributed.launched_processes({"WORLD_SIZE": "four"})
    assert distributed.rank_device(torch.device("cpu"), Processes(1, 2, 1)) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.rank_device(torch.device("cuda"), Processes(0, 1, 0)) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.rank_device(torch.device("cuda:0"), Processes(3, 4, 1)) == torch.device("cuda", 1)


def test_too_few_gpus_for_the_processes_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="needs cuda:1, but it has 1 GPU"):
        distributed.rank_device(torch.device("cuda"), Processes(3, 4, 1))


def test_each_rank_keeps_its_own_dropout_stream_across_a_checkpoint():
    seeds = {distributed.rank_seed(0, rank, step) for rank in range(4) for step in (0, 100)}
    assert len(seeds) == 8 and distributed.rank_seed(0, 1, 0) == distributed.rank_seed(0, 1, 0)
    saved = torch.get_rng_state()
    try:
        distributed.seed_other_ranks(5, 0, ALONE)  # rank 0 keeps the run's own stream
        assert torch.equal(torch.get_rng_state(), saved)
        distributed.seed_other_ranks(5, 0, Processes(1, 2))
        rank1 = torch.get_rng_state()
        assert not torch.equal(rank1, saved)
        torch.manual_seed(0)
        distributed.restore_rng_state({"torch": saved, "torch.rank1": rank1}, 5, 10, torch.device("cpu"), Processes(1, 2))
        assert torch.equal(torch.get_rng_state(), rank1)
        distributed.restore_rng_state({"torch": saved}, 5, 10, torch.device("cpu"), Processes(1, 2))  # saved by 1
        assert torch.equal(torch.get_rng_state(), torch.manual_seed(distributed.rank_seed(5, 1, 10)).get_state())
    finally:
        torch.set_rng_state(saved)


def test_the_cli_under_torchrun_shares_train_sample_eval_only_and_skips_a_leading_double_dash(monkeypatch, capsys):
    assert main(["--", "presets"]) == 0 and "tiny" in capsys.readouterr().out
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["presets"]) == 2
    assert "error: only train, sample, eval share their work among torchrun's processes" in capsys.readouterr().err
    assert main(["eval", "real", "synthetic"]) == 2


# -- two processes under torchrun -------------------------------------------------------------------------------
K = 3  # steps before the interruption; the run ends at 2K
OVERRIDES = ["model.dropout=0", "train.log_every=1", f"train.checkpoint_every={K}", "train.keep_checkpoints=3"]


def torchrun(*args) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m ddpmlab ARGS` on the CPU (gloo), this checkout's ddpmlab first on the path."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = str(Path(ddpmlab.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(port), "-m", "ddpmlab", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process, global batch 16, straight to step 2K (checkpoints at K and 2K)."""
    run = tmp_path_factory.mktemp("ddp") / "one"
    Trainer(load_config("tiny", [*OVERRIDES, f"train.steps={2 * K}"]), run, progress=False).train()
    return run


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two processes, each 8 of the global batch of 16, to step K."""
    run = tmp_path_factory.mktemp("ddp") / "two"
    result = torchrun("train", "tiny", *OVERRIDES, f"train.steps={K}", "--run-dir", run, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def assert_same_weights(a: Path, b: Path, step: int) -> None:
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        one, two = (load_file(ckpt.checkpoint_dir(run, step) / name) for run in (a, b))
        assert one.keys() == two.keys()
        worst = max((one[key] - two[key]).abs().max().item() for key in one)
        assert worst <= 1e-5, f"{name} at step {step}: {worst:.2e}"


def test_two_processes_reach_the_weights_of_one_at_the_same_global_batch(one_process, two_processes):
    run, result = two_processes
    assert_same_weights(one_process, run, K)
    # the logged loss is the mean over both processes' halves, i.e. the global batch's
    one = {r["step"]: r for r in read_metrics(one_process / "metrics.csv")}
    rows = [r for r in read_metrics(run / "metrics.csv") if r["step"] <= K]
    assert [r["step"] for r in rows] == list(range(1, K + 1))  # rank 0 alone wrote the rows
    for row in rows:
        assert row["loss"] == pytest.approx(one[row["step"]]["loss"], rel=1e-5)
        assert row["grad_norm"] == pytest.approx(one[row["step"]]["grad_norm"], rel=1e-4)
    assert result.stdout.count(f"finished at step {K} ") == 1  # rank 0 alone printed
    log = (run / "run.log").read_text()
    assert log.count("new run: ") == 1 and "ddpm, device cpu" in log
    rng = ckpt.read_tensors(ckpt.checkpoint_dir(run, K) / ckpt.RNG_FILE)
    assert not torch.equal(rng["torch.rank1"], rng["torch"])  # rank 1's own dropout stream, for --resume


def test_two_processes_resume_to_the_weights_of_an_uninterrupted_run(one_process, two_processes):
    run, _ = two_processes
    result = torchrun("train", "--resume", run, f"train.steps={2 * K}", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"finished at step {2 * K} ") == 1
    assert_same_weights(one_process, run, 2 * K)
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == list(range(1, 2 * K + 1))
    assert (run / "run.log").read_text().count(f"resumed at step {K}: ") == 1


def test_two_processes_share_sampling_and_draw_the_images_of_one(one_process, tmp_path, capsys):
    """ddpm's per-step noise is sliced too; 5 images in batches of 3: shares of 1 and 2, then 1 and 1."""
    options = ["--sampler", "ddpm", "--steps", "4", "--n", "5", "--batch-size", "3", "--seed", "2", "--quiet"]
    # `--`: torchrun's parser would take `--n` for an ambiguous abbreviation of its own options
    result = torchrun("--", "sample", one_process, *options, "--out", tmp_path / "two.npz")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote 5 samples") == 1
    assert main(["sample", str(one_process), *options, "--out", str(tmp_path / "one.npz")]) == 0
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        difference = np.abs(one["images"].astype(int) - two["images"].astype(int))
        assert one["images"].shape == (5, 16, 16, 3) and one["images"].std() > 0
        assert difference.max() <= 1 and (difference == 0).mean() > 0.999  # batch-size rounding may move a level


def test_two_processes_evaluate_keep_the_best_and_log_on_rank_0_alone(one_process, tmp_path, monkeypatch):
    """train.eval_every, keep_best and tensorboard under torchrun: rank 0 scores and writes, the other rank takes part
    in the checkpoint a new best may need, and the weights stay those of one process without evaluation."""
    from ddpmlab.eval.classifier import train_classifier_to_file

    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "cache"))
    train_classifier_to_file(load_config("tiny").data, steps=10, batch_size=32, progress=False)
    run = tmp_path / "two"
    result = torchrun("train", "tiny", *OVERRIDES, f"train.steps={2 * K}", "train.eval_every=2", "train.eval_n=8",
                      "train.eval_steps=2", "train.keep_best=true", "train.tensorboard=true", "--run-dir", run,
                      "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(one_process, run, 2 * K)
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows if r["fd"] is not None] == [2, 4, 6]
    best = min((r for r in rows if r["fd"] is not None), key=lambda r: r["fd"])
    assert ckpt.read_best(run)["step"] == best["step"] == ckpt.read_progress(run / "checkpoints" / "best")["step"]
    assert len(list((run / "tensorboard").iterdir())) == 1  # rank 0's events file alone
