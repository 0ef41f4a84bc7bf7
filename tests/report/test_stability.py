"""Training-stability figures on synthetic loss series with known answers."""

import math
import random

import pytest

from ddpmlab.report.stability import (THRESHOLDS, coefficient_of_variation, count_non_finite, count_spikes, ema,
                                      loss_stability, relative_trend, run_stability, verdict)
from ddpmlab.store.metrics_csv import MetricsLog

STEPS = list(range(10, 1010, 10))  # 100 logged rows


def test_constant_series_has_zero_cv_no_spikes_flat_trend_and_is_stable():
    figures = loss_stability(STEPS, [0.5] * 100)
    assert figures == {"cv": 0.0, "spikes": 0, "non_finite": 0, "trend": 1.0, "verdict": "stable"}


def test_three_planted_spikes_in_the_second_half_are_counted():
    values = [1.0] * 100
    for i in (60, 75, 90):
        values[i] = 3.5  # above 3 × median
    values[70] = 2.9  # below: not a spike
    values[10] = 10.0  # first half: not looked at
    assert count_spikes(values[50:]) == 3
    figures = loss_stability(STEPS, values)
    assert figures["spikes"] == 3 and figures["verdict"] == "unstable"


def test_spikes_of_a_negative_loss_are_measured_from_the_median():
    # median −2: a spike lies more than 2·|−2| = 4 above it, i.e. above 2
    assert count_spikes([-2.0] * 10 + [2.5, 1.5]) == 1


def test_nan_and_inf_rows_are_counted_and_make_the_run_unstable():
    values = [1.0] * 100
    values[20], values[80] = math.nan, math.inf
    assert count_non_finite(values) == 2
    figures = loss_stability(STEPS, values)
    assert figures["non_finite"] == 2 and figures["verdict"] == "unstable"
    assert figures["cv"] == 0.0 and figures["spikes"] == 0  # the finite rows are still constant


def test_ema_follows_the_recurrence_and_skips_nan():
    assert ema([1.0, 2.0, math.nan, 3.0], weight=0.5) == [1.0, 1.5, 1.5, 2.25]


def test_cv_closed_form():
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)  # pstdev 1, mean 2
    assert math.isnan(coefficient_of_variation([1.0]))


def test_relative_trend_is_the_ratio_of_quarter_means():
    steps = [1, 2, 3, 4, 5, 6, 7, 8]  # quarters of S=8: (2, 4] and (6, 8]
    values = [9, 9, 2, 2, 5, 5, 3, 3]
    assert relative_trend(steps, values) == pytest.approx(1.5)
    assert relative_trend(steps, [-v for v in values]) == pytest.approx(0.5)  # a negative loss that fell


def test_oscillating_gan_like_series_has_a_higher_cv_than_a_converging_one():
    noise = random.Random(0)
    # a DDPM-like curve: fast fall to 0.05, ±10% batch noise; a GAN-like one: slow swings of ±60% around 1
    converging = [(0.05 + 0.5 * math.exp(-s / 100)) * (1 + 0.2 * (noise.random() - 0.5)) for s in STEPS]
    oscillating = [1.0 + 0.6 * math.sin(s / 60) * (1 + 0.2 * (noise.random() - 0.5)) for s in STEPS]
    calm, wild = loss_stability(STEPS, converging), loss_stability(STEPS, oscillating)
    assert calm["cv"] == pytest.approx(0.0718, abs=1e-3) and calm["verdict"] == "stable"
    assert calm["trend"] < 1  # still falling
    assert wild["cv"] == pytest.approx(0.2105, abs=1e-3) and wild["cv"] > 2.5 * calm["cv"]
    assert wild["verdict"] == "moderate"


def test_verdict_limits():
    low = {name: limits[0] for name, limits in THRESHOLDS.items()}
    assert verdict(low) == "stable"
    assert verdict({**low, "cv": THRESHOLDS["cv"][0] + 0.01}) == "moderate"
    assert verdict({**low, "trend": THRESHOLDS["trend"][1] + 0.01}) == "unstable"
    assert verdict({**low, "trend": math.nan}) == "stable"


def test_run_stability_reads_a_gans_two_losses_and_takes_the_worst(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv", columns=("step", "loss", "loss_d", "loss_g", "wall_s"))
    for i, step in enumerate(STEPS):
        log.append(step=step, loss_d=0.7, loss_g=float("nan") if i == 95 else 2.0, wall_s=float(step))
    stability = run_stability(tmp_path / "metrics.csv", "dcgan")
    assert set(stability["losses"]) == {"loss_d", "loss_g"}
    assert stability["losses"]["loss_d"]["verdict"] == "stable"
    assert stability["losses"]["loss_g"]["non_finite"] == 1  # NaN is written as an empty cell
    assert stability["verdict"] == "unstable" and stability["cv"] == 0.0


def test_an_ldms_losses_are_judged_each_over_its_own_stage(tmp_path):
    """Stage 1 logs loss_ae at steps 10..500, stage 2 loss at 510..1000; each is empty in the other's rows. Each
    loss is judged over its stage alone: no empty cell counts as NaN and the quarters are the stage's own
    (loss: 2.0 over (500, 750], 1.0 after 750 -> second quarter (625, 750] = 2, last (875, 1000] = 1, trend 0.5)."""
    log = MetricsLog(tmp_path / "metrics.csv", columns=("step", "loss", "loss_ae", "loss_kl", "loss_d", "wall_s"))
    for step in STEPS:
        if step <= 500:  # a discriminator from step 300: loss_d logged in the rows of 310..500
            log.append(step=step, loss_ae=0.1, loss_kl=step / 100.0, loss_d=2.0 if step > 300 else None,
                       wall_s=float(step))
        else:
            log.append(step=step, loss=2.0 if step <= 750 else 1.0, wall_s=float(step))
    stability = run_stability(tmp_path / "metrics.csv", "ldm")
    assert set(stability["losses"]) == {"loss_ae", "loss_d", "loss"}  # not loss_kl, a regulariser that grows
    ae, diffusion = stability["losses"]["loss_ae"], stability["losses"]["loss"]
    assert ae["non_finite"] == diffusion["non_finite"] == stability["losses"]["loss_d"]["non_finite"] == 0
    assert ae["cv"] == 0.0 and ae["trend"] == pytest.approx(1.0) and ae["verdict"] == "stable"
    assert diffusion["trend"] == pytest.approx(0.5)
    # the same rows read as one stage: the empty cells are NaN rows, as for every other method
    assert run_stability(tmp_path / "metrics.csv", "ddpm")["losses"]["loss"]["non_finite"] == 50
