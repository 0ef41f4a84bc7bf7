import math

import pytest
import torch

from ddpmlab.config import load_config
from ddpmlab.errors import UserError
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer, scheduled_lr, warmup_lr
from ddpmlab.train.ema import EMA, ema_decay_at


def tiny(**overrides):
    return load_config("tiny", [f"{k}={v}" for k, v in overrides.items()])


def test_warmup_lr_is_linear_then_constant():
    assert warmup_lr(0, 2e-4, 5000) == pytest.approx(2e-4 / 5000)
    assert warmup_lr(2499, 2e-4, 5000) == pytest.approx(1e-4)
    assert warmup_lr(4999, 2e-4, 5000) == pytest.approx(2e-4)
    assert warmup_lr(10**6, 2e-4, 5000) == 2e-4
    assert warmup_lr(0, 1e-3, 0) == 1e-3


def test_scheduled_lr_warms_up_then_decays_to_its_end_factor():
    # constant: the warm-up alone
    assert [scheduled_lr(s, 1e-3, 10, 110) for s in (0, 9, 10, 109)] == [warmup_lr(s, 1e-3, 10) for s in (0, 9, 10, 109)]
    # cosine over the 100 post-warm-up steps: peak at the first, half-way at p = 1/2, lr_min + (lr − lr_min)(1 + cos πp)/2
    assert scheduled_lr(5, 1e-3, 10, 110, "cosine") == pytest.approx(6e-4)  # still warming up
    assert scheduled_lr(10, 1e-3, 10, 110, "cosine") == pytest.approx(1e-3)
    assert scheduled_lr(60, 1e-3, 10, 110, "cosine") == pytest.approx(5e-4)
    assert scheduled_lr(35, 1e-3, 10, 110, "cosine", 0.1) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert scheduled_lr(109, 1e-3, 10, 110, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi * 0.99)) / 2)
    assert scheduled_lr(10**6, 1e-3, 10, 110, "cosine", 0.1) == pytest.approx(1e-4)  # train.steps lowered below the step: the floor
    # linear, without warm-up
    assert scheduled_lr(0, 2e-4, 0, 100, "linear") == pytest.approx(2e-4)
    assert scheduled_lr(75, 2e-4, 0, 100, "linear", 0.2) == pytest.approx(2e-4 - 0.75 * 1.6e-4)


def test_trainer_sets_the_scheduled_lr_on_every_optimizer(tmp_path):
    trainer = Trainer(tiny(**{"train.steps": 8, "train.warmup_steps": 2, "train.lr_schedule": "cosine",
                              "train.log_every": 1, "method": "dcgan"}), tmp_path / "run", progress=False)
    trainer.train()
    logged = {row["step"]: row["lr"] for row in read_metrics(tmp_path / "run" / "metrics.csv") if row.get("lr")}
    expected = [scheduled_lr(s, trainer.lr, 2, 8, "cosine") for s in range(8)]  # row k: the lr of step k − 1
    assert [logged[k] for k in range(1, 9)] == pytest.approx(expected, rel=1e-5)  # metrics.csv keeps 6 digits
    rates = [g["lr"] for o in trainer.optimizers.values() for g in o.param_groups]
    assert len(rates) == 2 and rates == pytest.approx([expected[-1]] * 2)


def test_ema_follows_its_formula():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(net.weight, 0.0)
    ema = EMA(net, decay=0.9)
    for step in range(3):
        torch.nn.init.constant_(net.weight, 1.0)
        ema.update(net, step)
    # d_0 = 1/10, d_1 = 2/11, d_2 = 3/12: shadow = 1 − Π d_k
    assert ema_decay_at(0, 0.9) == pytest.approx(0.1) and ema_decay_at(100, 0.9) == 0.9
    assert ema.shadow.weight.item() == pytest.approx(1 - 0.1 * (2 / 11) * (3 / 12))


@pytest.mark.parametrize("warmup", [2.0, 3.0])
def test_ema_warmup_is_a_power_function_average(warmup):
    # d_s = (1 + s)/(K + s) weighs the init (i = −1) and the weights after updates i = 0..S as, for integer K,
    # (i + 2)(i + 3)···(i + K − 1), exactly (i + 2)^(K − 2) for K = 2 and 3: the plain mean of all S + 2, and the
    # ramp 2(i + 2)/((S + 2)(S + 3))
    torch.manual_seed(0)
    values = torch.randn(13, dtype=torch.float64)
    net = torch.nn.Linear(1, 1, bias=False).double()
    torch.nn.init.constant_(net.weight, values[0].item())
    ema = EMA(net, decay=0.9999, warmup=warmup)
    for step, value in enumerate(values[1:]):
        torch.nn.init.constant_(net.weight, value.item())
        ema.update(net, step)
    S = len(values) - 2
    weights = (torch.arange(-1, S + 1, dtype=torch.float64) + 2) ** (warmup - 2)
    assert ema.shadow.weight.item() == pytest.approx((weights / weights.sum() @ values).item(), rel=1e-12)


def test_the_trainer_averages_with_the_configured_warmup(tmp_path):
    trainer = Trainer(tiny(**{"train.steps": 2, "train.ema_warmup": 4}), tmp_path / "run", progress=False)
    assert (trainer.ema.warmup, trainer.ema.decay) == (4.0, trainer.config.train.ema_decay)


def test_ema_warmup_below_one_is_refused():
    with pytest.raises(UserError, match="train.ema_warmup"):
        load_config("tiny", ["train.ema_warmup=0.5"])


@pytest.mark.parametrize("method, beta1", [("ddpm", 0.9), ("ldm", 0.9), ("dcgan", 0.5)])
def test_every_optimizer_takes_train_adam_beta2(tmp_path, method, beta1):
    overrides = {"method": method, "train.steps": 4, "train.adam_beta2": 0.95}
    if method == "ldm":
        overrides |= {"ldm.autoencoder_steps": 2, "ldm.ae_channels": 8, "ldm.adversarial_weight": 0.1}
    trainer = Trainer(tiny(**overrides), tmp_path / "run", progress=False)
    betas = {group: tuple(o.param_groups[0]["betas"]) for group, o in trainer.optimizers.items()}
    assert betas == {group: (beta1, 0.95) for group in trainer.groups}


@pytest.mark.parametrize("beta2", ["0", "1", "1.5"])
def test_adam_beta2_outside_0_1_is_refused(beta2):
    with pytest.raises(UserError, match="train.adam_beta2"):
        load_config("tiny", [f"train.adam_beta2={beta2}"])


def test_resumed_run_reaches_the_same_weights(tmp_path):
    straight = Trainer(tiny(**{"train.steps": 30}), tmp_path / "a", progress=False)
    straight.train()
    first = Trainer(tiny(**{"train.steps": 12}), tmp_path / "b", progress=False)
    first.train()
    resumed = Trainer.resume(tmp_path / "b", ["train.steps=30"], progress=False)
    assert resumed.step == 12
    resumed.train()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.shadow.state_dict().values(), resumed.ema.shadow.state_dict().values()):
        assert torch.equal(a, b)
    rows = read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in rows] == [5, 10, 12, 15, 20, 25, 30]
    assert rows[-1]["loss"] == pytest.approx(read_metrics(tmp_path / "a" / "metrics.csv")[-1]["loss"], rel=1e-6)


def test_training_lowers_the_loss_and_writes_the_run(tmp_path):
    trainer = Trainer(tiny(**{"train.steps": 40}), tmp_path / "run", progress=False)
    summary = trainer.train()
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert summary["step"] == 40 and not summary["interrupted"]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]  # tiny's loss falls from ~1.0 to below 0.6 in 40 steps
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [10, 20, 30, 40]
    for name in ("config.yaml", "loss.png", "samples/step_0000020.png", "samples/step_0000040.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 3  # keep_checkpoints


def test_any_backbone_trains(tmp_path, conv_backbone):
    trainer = Trainer(tiny(**{"train.steps": 5, "train.log_every": 1}), tmp_path / "run", model=conv_backbone, progress=False)
    trainer.train()
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 5


def test_conditional_training_uses_null_labels(tmp_path):
    trainer = Trainer(tiny(**{"model.conditional": "true", "model.class_dropout": 0.5, "train.steps": 2}),
                      tmp_path / "run", progress=False)
    labels = trainer.training_labels(torch.arange(400))
    null = trainer.num_classes
    assert null > 1 and (labels == null).float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert torch.equal(labels[labels != null], trainer.train_data.labels[:400][labels != null])
