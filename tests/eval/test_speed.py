"""Cost numbers: sampling speed is batch / median time, training cost is read from metrics.csv."""

import statistics

import pytest
import torch

from ddpmlab.config import load_config
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.eval import speed
from ddpmlab.eval.speed import process_peak_rss_bytes, sampling_speed, training_cost
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.metrics_csv import MetricsLog

BATCH_16 = load_config("tiny", ["train.batch_size=16"])


class Zero(torch.nn.Module):
    """Predicts zero noise; counts its calls."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x, t, labels=None):
        self.calls += 1
        return x * self.weight


def test_sampling_speed_is_batch_over_median_of_repeats():
    model = Zero()
    result = sampling_speed(model, NoiseSchedule.linear(20), (6, 1, 4, 4), SamplingSettings("ddim", 5), repeats=3)
    assert model.calls == 2 + 3 * 5  # a 2-step warm-up, then three timed 5-step runs
    assert len(result["seconds"]) == 3 and result["seconds_per_batch"] == statistics.median(result["seconds"])
    assert result["images_per_s"] == pytest.approx(6 / result["seconds_per_batch"])
    assert (result["batch_size"], result["steps"], result["sampler"]) == (6, 5, "ddim")
    assert result["peak_memory_kind"] == speed.CPU_PEAK and result["peak_memory_bytes"] == process_peak_rss_bytes()
    ddpm = sampling_speed(Zero(), NoiseSchedule.linear(20), (2, 1, 4, 4), SamplingSettings("ddpm"), repeats=1)
    assert ddpm["steps"] == 20


def test_peak_rss_is_in_bytes():
    before = process_peak_rss_bytes()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    assert process_peak_rss_bytes() >= 64 * 2**20 and process_peak_rss_bytes() >= before
    del block


def test_training_cost_from_metrics_csv(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append(step=10, loss=1.0, images_per_s=100.0, wall_s=2.0)
    log.append(step=20, loss=0.5, images_per_s=300.0, wall_s=5.0)
    log.append(step=30, loss=0.4, images_per_s=200.0, wall_s=8.0)
    cost = training_cost(tmp_path, BATCH_16)
    assert cost == {"train_steps": 30, "train_wall_s": 8.0, "train_images": 480, "train_images_per_s": 60.0,
                    "train_step_images_per_s": 200.0, "train_other_load": None, "train_cpu_shared": None}
    assert training_cost(tmp_path / "absent", BATCH_16) == {}
    # a latent DDPM's stages have their own batches: 10 autoencoder steps of 8, then 20 diffusion steps of 16
    ldm = load_config("tiny", ["method=ldm", "train.steps=30", "train.batch_size=16", "ldm.autoencoder_steps=10",
                               "ldm.ae_batch_size=8"])
    assert training_cost(tmp_path, ldm)["train_images"] == 10 * 8 + 20 * 16


def test_training_on_a_shared_cpu_is_known_from_the_logged_load(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    for step, load in ((10, 0.1), (20, 3.5), (30, 4.0)):  # other work started beside the training
        log.append(step=step, loss=1.0, images_per_s=2.0, wall_s=step / 2, other_load=load)
    cost = training_cost(tmp_path, BATCH_16)
    assert cost["train_other_load"] == 3.5 and cost["train_cpu_shared"] is True
    alone = tmp_path / "alone"
    alone.mkdir()
    log = MetricsLog(alone / "metrics.csv")
    log.append(step=10, loss=1.0, images_per_s=50.0, wall_s=3.0, other_load=-0.2)
    assert training_cost(alone, BATCH_16)["train_cpu_shared"] is False
