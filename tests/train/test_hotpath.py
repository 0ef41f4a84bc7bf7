"""The speed switches and the sync-free hot path: the defaults leave CPU numbers as they were, each switch keeps the
maths (to float rounding), the foreach EMA is the EMA formula, logging on the device logs the same values, checkpoints
of a compiled network keep plain keys, and the samplers' loops never read a device tensor back to the host."""

import time

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.config import load_config
from ddpmlab.data import ImageData
from ddpmlab.diffusion import NoiseSchedule, diffusion_loss
from ddpmlab.samplers import sample
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer, hotpath
from ddpmlab.train.ema import EMA, ema_decay_at
from ddpmlab.train.log import LogWindow

QUIET = ["train.sample_every=1000", "train.checkpoint_every=1000", "train.val_every=1000"]


def tiny(*overrides):
    return load_config("tiny", [*QUIET, *overrides])


def test_foreach_ema_is_the_averaging_formula():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Linear(5, 2))
    ema = EMA(net, decay=0.95)
    expected = [p.detach().double().clone() for p in net.parameters()]
    for step in range(12):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net, step)
        d = ema_decay_at(step, 0.95)
        expected = [d * e + (1 - d) * p.detach().double() for e, p in zip(expected, net.parameters())]
    assert ema_decay_at(11, 0.95) == pytest.approx(12 / 21)  # the warm-up decay was in force throughout
    for averaged, reference in zip(ema.shadow.parameters(), expected):
        torch.testing.assert_close(averaged.double(), reference, rtol=1e-6, atol=1e-6)


def test_the_device_window_means_are_the_python_float_means_bit_for_bit():
    values = torch.randn(7, generator=torch.Generator().manual_seed(3)) * 10
    window = LogWindow()
    for value in values:
        window.add({"loss": value.clone()}, images=4, seconds=0.5)
    means, images_per_s = window.flush()
    python_sum = 0.0
    for value in values:  # how the window summed before: value.item() into a Python float
        python_sum += value.item()
    assert means == {"loss": python_sum / 7}
    assert images_per_s == pytest.approx(28 / 3.5, rel=1e-3)  # the read-back time counts, and is tiny on a CPU
    assert window.steps == 0 and window.sums == {}


def test_logged_rows_are_window_means_of_the_steps_and_the_last_gradient_norm(tmp_path):
    every_step = Trainer(tiny("train.steps=8", "train.log_every=1"), tmp_path / "a", progress=False)
    every_step.train()
    every_fourth = Trainer(tiny("train.steps=8", "train.log_every=4"), tmp_path / "b", progress=False)
    every_fourth.train()
    steps, windows = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    assert [row["step"] for row in windows] == [4, 8]
    for row, first in zip(windows, (0, 4)):
        assert row["loss"] == pytest.approx(sum(r["loss"] for r in steps[first:first + 4]) / 4, rel=2e-6)
        assert row["grad_norm"] == steps[first + 3]["grad_norm"] > 0
    for a, b in zip(every_step.model.state_dict().values(), every_fourth.model.state_dict().values()):
        assert torch.equal(a, b)  # logging more often reads more, and changes nothing


def test_channels_last_trains_to_the_same_losses(tmp_path):
    runs = {}
    for layout in ("false", "true"):
        trainer = Trainer(tiny("train.steps=4", "train.log_every=1", f"train.channels_last={layout}"),
                          tmp_path / layout, progress=False)
        trainer.train()
        runs[layout] = trainer
    conv = runs["true"].model.backbone.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert runs["false"].model.backbone.conv_in.weight.is_contiguous()
    losses = {layout: [row["loss"] for row in read_metrics(tmp_path / layout / "metrics.csv")] for layout in runs}
    assert len(losses["true"]) == 4 and losses["true"] == pytest.approx(losses["false"], rel=1e-5)


def test_a_channels_last_run_resumes_with_its_optimizer_state_laid_out_like_the_weights(tmp_path):
    first = Trainer(tiny("train.steps=2", "train.channels_last=true"), tmp_path / "run", progress=False)
    first.train()
    resumed = Trainer.resume(tmp_path / "run", ["train.steps=3"], progress=False)
    optimizer = resumed.optimizers["model"]
    for parameter, state in optimizer.state.items():
        assert state["exp_avg"].stride() == state["exp_avg_sq"].stride() == parameter.stride()
    weight = resumed.model.backbone.conv_in.weight
    torch.testing.assert_close(optimizer.state[weight]["exp_avg"], first.optimizers["model"].state[
        first.model.backbone.conv_in.weight]["exp_avg"], rtol=0, atol=0)
    resumed.train()
    assert resumed.step == 3


def test_default_switches_are_off_on_the_cpu_and_on_for_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [hotpath.resolve_switch(value, cpu) for value in ("auto", True, False)] == [False, True, False]
    assert [hotpath.resolve_switch(value, cuda) for value in ("auto", True, False)] == [True, True, False]
    assert hotpath.memory_format("auto", cpu) == torch.contiguous_format
    assert hotpath.memory_format("auto", cuda) == torch.channels_last


def test_data_goes_on_the_gpu_when_it_fits_in_a_quarter_of_the_free_memory(monkeypatch):
    data = ImageData(torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), torch.zeros(1000, dtype=torch.long), 10, None, "x")
    size = 1000 * 3 * 32 * 32 + 1000 * 8
    cuda = torch.device("cuda", 0)
    for free, expected in ((4 * size, cuda), (4 * size - 1, torch.device("cpu"))):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 10 * free))
        assert hotpath.data_device(data, cuda, "auto") == expected
    assert hotpath.data_device(data, cuda, True) == cuda and hotpath.data_device(data, cuda, False).type == "cpu"
    assert all(hotpath.data_device(data, torch.device("cpu"), value).type == "cpu" for value in ("auto", True, False))


@pytest.mark.parametrize("override,message", [
    ("train.fused_adam=maybe", "train.fused_adam must be one of auto, true, false, got 'maybe'"),
    ("train.channels_last=1", "train.channels_last must be one of auto, true, false, got 1"),
    ("train.data_on_device=null", "train.data_on_device must not be null"),
    ("train.compile=auto", "train.compile must be true or false"),
])
def test_switch_values_are_checked_by_name(override, message):
    with pytest.raises(UserError, match=message):
        load_config("tiny", [override])


def test_switches_may_change_on_resume(tmp_path):
    Trainer(tiny("train.steps=2"), tmp_path / "run", progress=False).train()
    resumed = Trainer.resume(tmp_path / "run", ["train.steps=3", "train.channels_last=true", "train.fused_adam=false",
                                                "train.data_on_device=true"], progress=False)
    assert resumed.config.train.channels_last is True and resumed.model.backbone.conv_in.weight.is_contiguous(
        memory_format=torch.channels_last)


def test_a_fused_adam_run_resumes_unfused_and_back(tmp_path):
    try:
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
    except RuntimeError as exc:
        print(f"this PyTorch has no fused AdamW on the CPU ({exc})")
        pytest.skip("no fused AdamW on the CPU in this PyTorch")
    fused = Trainer(tiny("train.steps=3", "train.log_every=1", "train.fused_adam=true"), tmp_path / "run", progress=False)
    fused.train()
    assert fused.optimizers["model"].param_groups[0]["fused"] is True
    plain = Trainer(tiny("train.steps=3", "train.log_every=1"), tmp_path / "plain", progress=False)
    plain.train()
    assert [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.csv")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "plain" / "metrics.csv")], rel=1e-4)
    resumed = Trainer.resume(tmp_path / "run", ["train.steps=4", "train.fused_adam=false"], progress=False)
    assert not resumed.optimizers["model"].param_groups[0]["fused"]  # the resumed run's choice, not the saved one
    resumed.train()
    assert resumed.step == 4


def test_a_compiled_network_saves_plain_keys_and_resumes_uncompiled(tmp_path, conv_backbone, monkeypatch):
    # torch.compile's default backend (inductor) takes minutes to build C++ kernels on a small shared CPU; the keys
    # come from how the module is wrapped (nn.Module.compile, in place), not from the backend, so this uses "eager"
    compile_in_place = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: compile_in_place(self, backend="eager"))
    start = time.perf_counter()
    trainer = Trainer(tiny("train.steps=2", "train.compile=true", "data.val_fraction=0"), tmp_path / "run",
                      model=conv_backbone, progress=False)
    trainer.train()
    print(f"2 steps with the compiled (eager backend) network took {time.perf_counter() - start:.1f} s")
    assert trainer.model.backbone._compiled_call_impl is not None  # compiled, in place
    assert trainer.ema.shadow.backbone._compiled_call_impl is None  # the average is copied before compiling
    folder = ckpt.list_checkpoints(tmp_path / "run")[-1]
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        state, _ = ckpt.read_weights(folder / name)
        assert sorted(state) == ["net.bias", "net.weight"]  # no `_orig_mod.` prefix
    resumed = Trainer.resume(tmp_path / "run", ["train.steps=3", "train.compile=false"], model=type(conv_backbone)(),
                             progress=False)
    torch.testing.assert_close(resumed.model.state_dict(), trainer.model.state_dict(), rtol=0, atol=0)
    resumed.train()
    assert resumed.step == 3


class _Scaled(torch.nn.Module):
    """A one-convolution backbone: cheap on the meta device, where every shape is computed and no value exists."""

    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t, labels=None):
        return self.conv(x) * t[:, None, None, None].float()


@pytest.mark.parametrize("method,steps", [("ddpm", 3), ("ddim", 3), ("dpm-solver++", 3), ("heun", 2)])
def test_sampler_loops_never_read_a_device_tensor_back(method, steps):
    # on the meta device any read (.item(), .cpu(), .tolist()) raises: the loop must only queue work
    schedule = NoiseSchedule.linear(100)
    x = sample(_Scaled().to("meta"), schedule, (2, 3, 8, 8), sampler=method, steps=steps, eta=1.0 if method == "ddim" else 0.0,
               generator=torch.Generator().manual_seed(0))
    assert x.device.type == "meta" and x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("weighting", ["none", "min-snr"])
def test_the_training_loss_never_reads_a_device_tensor_back(weighting):
    x0 = torch.zeros(2, 3, 8, 8, device="meta")
    loss = diffusion_loss(_Scaled().to("meta"), NoiseSchedule.linear(100), x0, loss_weighting=weighting,
                          generator=torch.Generator().manual_seed(0))
    assert loss.device.type == "meta" and loss.shape == ()


def test_a_schedule_moves_once_per_device():
    schedule = NoiseSchedule.cosine(50)
    assert schedule.to("cpu") is schedule
    moved = schedule.to("meta")
    assert moved is schedule.to(torch.device("meta")) and moved.T == 50
    assert moved.sqrt_alphas_cumprod.device.type == "meta" and moved.sqrt_alphas_cumprod.dtype == torch.float64
    assert schedule.betas.device.type == "cpu"
