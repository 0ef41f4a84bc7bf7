"""Numerical faults: a step whose loss or gradient is not finite is skipped by every method (no optimizer step of its
phase, no EMA update, its batch-norm statistics undone), counted in metrics.csv's bad_steps, and
train.max_bad_steps of them in a row stop the run with a UserError."""

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import load_config
from ddpmlab.errors import DdpmlabWarning, UserError
from ddpmlab.methods import METHOD_CLASSES, Phase
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer
from ddpmlab.train import trainer as trainer_module


class NaNGradient(torch.autograd.Function):
    """The identity whose gradient is NaN: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


POISON = {"loss": lambda loss: loss * float("nan"), "gradient": NaNGradient.apply,
          "inf loss": lambda loss: loss + float("inf")}


def inject(monkeypatch, method: str, bad: dict[int, tuple[int, str]]):
    """Make attempt k (0-based, counting skipped ones) of `method`'s training step poison its phase bad[k][0] with
    bad[k][1] (a key of POISON); returns the list of the phase groups poisoned."""
    cls, real = METHOD_CLASSES[method], METHOD_CLASSES[method].training_phases
    attempts, poisoned = [0], []

    def training_phases(self, *args, **kwargs):
        attempt = attempts[0]
        attempts[0] += 1
        for index, phase in enumerate(real(self, *args, **kwargs)):
            if bad.get(attempt, (None,))[0] == index:
                poisoned.append(phase.group)
                phase = Phase(phase.group, POISON[bad[attempt][1]](phase.loss), phase.logs)
            yield phase

    monkeypatch.setattr(cls, "training_phases", training_phases)
    return poisoned


def count_calls(monkeypatch, trainer):
    """{group: optimizer steps} and [EMA updates] of a trainer, counted as they happen."""
    steps, ema_updates = {group: 0 for group in trainer.optimizers}, []
    for group, optimizer in trainer.optimizers.items():
        real_step = optimizer.step

        def step(*args, _group=group, _real=real_step, **kwargs):
            steps[_group] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(optimizer, "step", step)
    real_update = trainer.ema.update
    monkeypatch.setattr(trainer.ema, "update", lambda *args: ema_updates.append(1) or real_update(*args))
    return steps, ema_updates


def all_finite(trainer) -> bool:
    tensors = [*trainer.model.state_dict().values(), *trainer.ema.shadow.state_dict().values()]
    for optimizer in trainer.optimizers.values():
        tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return all(torch.isfinite(t.float()).all() for t in tensors)


def tiny(method, *overrides):
    return load_config("tiny", [f"method={method}", "train.steps=6", "train.log_every=3", "train.checkpoint_every=3",
                                "train.sample_every=1000", "train.val_every=1000", *overrides])


@pytest.mark.parametrize("method", ["ddpm", "vae", "dcgan", "vaegan"])
def test_non_finite_steps_are_skipped_by_every_method(tmp_path, monkeypatch, method):
    last = 0 if method in ("ddpm", "vae") else 1  # the GANs: the discriminator's phase, then the generator's
    bad = {1: (last, "loss"), 4: (last, "gradient"), 5: (0, "inf loss")}
    poisoned = inject(monkeypatch, method, bad)
    trainer = Trainer(tiny(method), tmp_path / "run", progress=False)
    steps, ema_updates = count_calls(monkeypatch, trainer)
    with pytest.warns(DdpmlabWarning) as warned:
        trainer.train()
    assert len(poisoned) == 3 and trainer.step == 6
    # every good step stepped every group once; a poisoned phase did not step, the phases before it did
    order = ["discriminator", "generator"] if last else list(trainer.optimizers)  # the phases' order
    expected = {group: 6 + sum(1 for phase, _ in bad.values() if order.index(group) < phase) for group in order}
    assert steps == expected, (steps, expected)
    assert len(ema_updates) == 6
    assert all_finite(trainer)
    for folder in ckpt.list_checkpoints(tmp_path / "run"):
        state, _ = ckpt.read_weights(folder / ckpt.EMA_FILE)
        assert all(torch.isfinite(t.float()).all() for t in state.values())
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [(r["step"], r["bad_steps"]) for r in rows] == [(3, 1), (6, 2)]
    assert all(r["loss" if method != "dcgan" else "loss_d"] is not None for r in rows)
    log = (tmp_path / "run" / "run.log").read_text()
    assert log.count("skipped") == 2  # noted on the first of each streak: attempts 1 and 4 (5 follows 4)
    assert "step 2 skipped: a loss of nan" in log and "step 4 skipped: a gradient norm of nan" in log
    assert any(str(w.message).startswith("step 2 skipped") for w in warned if w.category is DdpmlabWarning)
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_skipped_step_undoes_its_batch_norm_statistics(tmp_path, monkeypatch):
    """A NaN image makes the DCGAN discriminator's batch-norm running statistics NaN in the forward pass; the skipped
    step puts them back."""
    trainer = Trainer(tiny("dcgan", "train.steps=4"), tmp_path / "run", progress=False)
    real_batch, attempts, seen = trainer.next_batch, [0], []

    def next_batch(stage):
        x0, labels = real_batch(stage)
        attempts[0] += 1
        if attempts[0] == 3:
            x0[0, 0, 0, 0] = float("nan")
        return x0, labels

    real_restore = trainer_module.restore_buffers

    def restore_buffers(model, saved):
        seen.append(not all(torch.isfinite(b.float()).all() for b in model.buffers()))
        real_restore(model, saved)

    monkeypatch.setattr(trainer, "next_batch", next_batch)
    monkeypatch.setattr(trainer_module, "restore_buffers", restore_buffers)
    trainer.train()
    assert seen == [True] and trainer.step == 4 and all_finite(trainer)
    assert sum(r["bad_steps"] for r in read_metrics(tmp_path / "run" / "metrics.csv")) == 1


def test_max_bad_steps_in_a_row_stop_the_run(tmp_path, monkeypatch, capsys):
    inject(monkeypatch, "ddpm", {k: (0, "loss") for k in (1, 2, 4, 5, 7, 8, 9, 10, 11)})
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--quiet", "train.steps=20", "train.max_bad_steps=3",
                 "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: 3 training steps in a row had a non-finite loss or gradient (the last at step 4: a "
                       "loss of nan in the model phase), train.max_bad_steps=3; the run stopped, its checkpoints hold "
                       "finite weights. Lower the learning rate, set train.grad_clip or check the data, then `ddpmlab "
                       "train --resume` the run")
    # attempts 0, 3, 6 were good (steps 1-3); 1-2 and 4-5 were two in a row each, 7-9 the third in a row
    assert [(r["step"], r["bad_steps"]) for r in read_metrics(run / "metrics.csv")] == [(1, 0), (2, 2), (3, 2)]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000002"]
    assert "stopped: 3 training steps in a row" in (run / "run.log").read_text()
    assert not (run / ".lock").exists()
    with pytest.raises(UserError, match="invalid config value train.max_bad_steps: must be positive"):
        load_config("tiny", ["train.max_bad_steps=0"])


def test_processes_skip_together(monkeypatch):
    """With several processes a step is skipped on all when the loss of any is not finite (their gradients are
    averaged, the losses not): the decision is taken over every process."""
    from ddpmlab import distributed
    from ddpmlab.train.health import StepHealth

    asked = []
    monkeypatch.setattr(distributed, "any_process", lambda flag, processes: asked.append(flag) or True)
    health, two = StepHealth(3), distributed.Processes(1, 2)
    assert health.checked_grad_norm(torch.tensor(0.5), torch.tensor(2.0), "model", two) is None  # finite here
    assert asked == [False] and "on another process" in health.last
    monkeypatch.setattr(distributed, "any_process", lambda flag, processes: flag)
    assert health.checked_grad_norm(torch.tensor(0.5), torch.tensor(2.0), "model", two) == 2.0
    assert health.checked_grad_norm(torch.tensor(float("inf")), torch.tensor(2.0), "model", two) is None
    assert health.last == "a loss of inf in the model phase"
