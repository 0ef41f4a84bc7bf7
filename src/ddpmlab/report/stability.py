"""How steadily a run trained, read from its metrics.csv: one figure per loss and one verdict per run.

For each training loss (a DDPM's or VAE's `loss`; a GAN's `loss_d` and `loss_g`, VAE-GAN included; a latent DDPM's
`loss_ae`, and `loss_d` and `loss_g` with a discriminator, in its autoencoder stage and `loss` in its diffusion
stage), over the second half of its training (the rows whose step is past half way from the loss's start to its
last logged step). A loss spans the whole run from step 0, or, for a method that trains in stages (STAGED), its
stage: the rows from its first to its last value, starting at the step of the row before (an LDM leaves each
stage's losses empty in the other stage's rows):

- cv: the coefficient of variation, std / |mean|, of the EMA-smoothed loss (EMA_WEIGHT per logged row, run over
  the whole curve so the second half starts warm). Smoothing removes the batch-to-batch noise that every method
  has, so what is left is slow drift and oscillation: a converging DDPM is near 0.01, a GAN whose players trade
  blows is well above 0.1.
- spikes: logged rows whose raw value lies more than (SPIKE_FACTOR − 1)·|median| above the median of the
  second half, i.e. above SPIKE_FACTOR × median for a positive loss (a VAE's negative ELBO can be negative;
  the same distance from the median applies).
- non_finite: rows, over the loss's whole span, where it is NaN or ±inf (written as an empty cell or `inf`):
  divergence events.
- trend: mean of the last quarter over mean of the second quarter of training, as 1 + (last − second)/|second|,
  which is last/second for a positive loss: 1 flat, below 1 still improving, above 1 getting worse.

THRESHOLDS holds every limit of the verdict in one place; a run's verdict is the worst of its losses'.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ddpmlab.store.metrics_csv import loss_columns, read_metrics

EMA_WEIGHT = 0.1  # weight of the newest logged row in the smoothed curve: about the last 10 rows
SPIKE_FACTOR = 3.0  # k: a spike is a raw value above k × the median
# verdict limits: "stable" needs every value at or below the first, anything above the second is "unstable"
THRESHOLDS = {
    "cv": (0.10, 0.30),  # coefficient of variation of the smoothed loss (a loss still falling steadily has some)
    "spikes": (0, 2),  # raw values above SPIKE_FACTOR × median in the second half
    "non_finite": (0, 0),  # any NaN/inf row makes a run unstable
    "trend": (1.05, 1.25),  # last-quarter / second-quarter mean: a loss that grows by a quarter is unstable
}
VERDICTS = ("stable", "moderate", "unstable")
LOSS_COLUMNS = {"ddpm": ("loss",), "vae": ("loss",), "dcgan": ("loss_d", "loss_g"), "vaegan": ("loss_d", "loss_g"),
                "ldm": ("loss_ae", "loss_d", "loss_g", "loss", "loss_guide")}
STAGED = ("ldm",)  # methods whose losses each span their own stage's rows


def ema(values: list[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Exponential moving average s_i = (1 − w)·s_{i−1} + w·x_i, starting at the first value; non-finite values
    are skipped (the average carries on over them)."""
    smoothed, current = [], None
    for value in values:
        if math.isfinite(value):
            current = value if current is None else (1 - weight) * current + weight * value
        smoothed.append(current if current is not None else math.nan)
    return smoothed


def coefficient_of_variation(values: list[float]) -> float:
    """Population std / |mean| of the finite values: 0 for a constant series, inf for a zero mean with spread,
    nan for fewer than two finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    mean, std = statistics.fmean(finite), statistics.pstdev(finite)
    if mean == 0:
        return 0.0 if std == 0 else math.inf
    return std / abs(mean)


def count_spikes(values: list[float], factor: float = SPIKE_FACTOR) -> int:
    """Finite values more than (factor − 1)·|median| above the median of the finite values (value > factor ×
    median for a positive series)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0
    median = statistics.median(finite)
    return sum(v - median > (factor - 1) * abs(median) for v in finite)


def count_non_finite(values: list[float]) -> int:
    """Values that are NaN or ±inf (a missing cell reads as NaN)."""
    return sum(not math.isfinite(v) for v in values)


def relative_trend(steps: list[int], values: list[float], start: int = 0) -> float:
    """1 + (m4 − m2)/|m2|, m2 and m4 the means of the finite values logged in the second (steps in (s + L/4,
    s + L/2]) and last (steps in (s + 3L/4, s + L]) quarters of training from step s = `start`, L the last step
    minus s: m4/m2 for a positive loss. nan when a quarter has no finite value or m2 is 0."""
    length = max(steps) - start

    def quarter_mean(low: float, high: float) -> float:
        chosen = [v for s, v in zip(steps, values) if start + low < s <= start + high and math.isfinite(v)]
        return statistics.fmean(chosen) if chosen else math.nan

    second, last = quarter_mean(length / 4, length / 2), quarter_mean(3 * length / 4, length)
    if not (math.isfinite(second) and math.isfinite(last)) or second == 0:
        return math.nan
    return 1 + (last - second) / abs(second)


def loss_stability(steps: list[int], values: list[float], start: int = 0) -> dict:
    """{"cv", "spikes", "non_finite", "trend", "verdict"} of one loss curve (values NaN where not finite) trained
    from step `start`."""
    smoothed = ema(values)
    half = start + (max(steps) - start) / 2
    second_half = [i for i, s in enumerate(steps) if s > half] or list(range(len(steps)))
    figures = {"cv": coefficient_of_variation([smoothed[i] for i in second_half]),
               "spikes": count_spikes([values[i] for i in second_half]),
               "non_finite": count_non_finite(values),
               "trend": relative_trend(steps, values, start)}
    return {**figures, "verdict": verdict(figures)}


def verdict(figures: dict) -> str:
    """"stable" when every figure is at or below its first THRESHOLDS limit, "unstable" when any is above its
    second, else "moderate". A NaN figure (too few rows to tell) counts as within both limits."""
    level = 0
    for name, (stable_limit, unstable_limit) in THRESHOLDS.items():
        value = figures[name]
        if value > unstable_limit:  # False for NaN
            level = 2
        elif value > stable_limit:
            level = max(level, 1)
    return VERDICTS[level]


def worst(verdicts: list[str]) -> str:
    """The least stable of several verdicts."""
    return VERDICTS[max(VERDICTS.index(v) for v in verdicts)]


def column_stability(rows: list[dict], column: str, staged: bool = False) -> dict | None:
    """loss_stability of one metrics.csv column over every row from step 0, or, `staged`, over its stage: the rows
    from its first to its last value, from the step of the row before the first (0 when it is the first row); None
    for a staged column never logged."""
    span, start = rows, 0
    if staged:
        logged = [i for i, row in enumerate(rows) if row[column] is not None]
        if not logged:
            return None
        span = rows[logged[0]:logged[-1] + 1]
        start = rows[logged[0] - 1]["step"] if logged[0] > 0 else 0
    return loss_stability([r["step"] for r in span], [math.nan if r[column] is None else r[column] for r in span],
                          start)


def run_stability(metrics_path: str | Path, method: str) -> dict:
    """Stability of a run from its metrics.csv: {"method", "losses": {column: loss_stability(...)}, "verdict",
    "cv": the largest loss CV}. A method not in LOSS_COLUMNS uses every loss column of the file."""
    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    if not rows:
        return {"method": method, "losses": {}, "verdict": "n/a", "cv": math.nan}
    columns = [c for c in LOSS_COLUMNS.get(method, loss_columns(rows[0])) if c in rows[0]]
    losses = {column: figures for column in columns
              if (figures := column_stability(rows, column, method in STAGED)) is not None}
    cvs = [figures["cv"] for figures in losses.values() if not math.isnan(figures["cv"])]
    return {"method": method, "losses": losses, "verdict": worst([f["verdict"] for f in losses.values()]) if losses
            else "n/a", "cv": max(cvs) if cvs else math.nan}
