"""Evaluation during training (`train.eval_every`, `train.keep_best`): the FD (and, where asked, FID) of the EMA
network's samples, measured like `ddpmlab eval` so that the numbers are the same.

Every evaluation draws `train.eval_n` samples from one fixed seed (`ddpmlab eval`'s default, 0) with the fast
sampler `train.eval_sampler` at `train.eval_steps` (a single-pass model just decodes), and compares their features
with those of the dataset's held-out split, computed once and cached by eval/reference.py. The training RNG is
left as it was, so a run reaches the same weights with evaluation on or off.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import numpy as np
import torch

from ddpmlab.config import Config, eval_metric_names
from ddpmlab.errors import UserError
from ddpmlab.eval.classifier import held_out_split
from ddpmlab.eval.reference import feature_stats, reference_features
from ddpmlab.eval.samples import evaluation_guidance, evaluation_interval, generate_samples, interval_setting
from ddpmlab.eval.scores import FEATURE_BATCH, METRICS, fd_between, needed_extractors
from ddpmlab.samplers import SamplingSettings

EVAL_SEED = 0  # `ddpmlab eval --seed`'s default
REF_N = 10000  # held-out images in the reference statistics: `ddpmlab eval --ref-n`'s default


class TrainingEvaluator:
    """Scores an EMA network during training; built (classifier, Inception, reference statistics loaded) before
    training starts, so that a missing classifier fails at once with the key that asked for it."""

    def __init__(self, config: Config, net: torch.nn.Module, device: torch.device, progress: bool = False):
        t = config.train
        self.config, self.device, self.metrics = config, device, eval_metric_names(t.eval_metrics)
        self.single_pass = net.SINGLE_PASS
        # classifier-free guidance only: an LDM's autoguidance guide is set part-way (ldm.guide_steps), and one protocol
        # for every evaluation of the run keeps its scores comparable (train.keep_best)
        self.guidance = evaluation_guidance(bool(net.num_classes), config.sample.guidance)
        if self.single_pass:
            self.sampler, self.steps, self.spacing, self.nfe, self.sampling = config.method, None, None, 1, None
        else:
            T = net.schedule.T
            if t.eval_steps > T:
                raise UserError(f"invalid config value train.eval_steps: {t.eval_steps} is more than the model's "
                                f"{T} timesteps; lower it")
            interval = evaluation_interval(bool(net.num_classes), config.sample.guidance_interval, None, self.guidance)
            self.sampling = SamplingSettings(t.eval_sampler, t.eval_steps, guidance=self.guidance,
                                             guidance_interval=interval,
                                             clip_denoised=config.sample.clip_denoised).resolved(T)
            self.sampler, self.steps, self.spacing = self.sampling.sampler, self.sampling.steps, self.sampling.spacing
            self.nfe = self.sampling.nfe(T)
        self.split = held_out_split(config.data)
        if self.split == "val" and config.data.val_fraction <= 0:
            raise UserError(f"train.eval_every={t.eval_every} compares samples with held-out images, but "
                            f"{config.data.name} has no test split and data.val_fraction=0; set data.val_fraction > 0")
        channels, image_size = net.image_shape[:2]
        with _rng_untouched(device):  # building the classifier draws initial weights before loading its own
            try:
                self.extractors, _ = needed_extractors(self.metrics, config.data, channels, image_size, None, device)
            except UserError as exc:
                raise UserError(f"train.eval_every={t.eval_every} scores samples by {', '.join(self.metrics)}: {exc}; "
                                f"or set train.eval_every=0") from None
            self.references = {}
            for kind, extractor in self.extractors.items():
                _, stats, info = reference_features(config.data, self.split, extractor, REF_N, FEATURE_BATCH[kind],
                                                    progress)
                self.references[kind] = (stats, info["count"])

    @property
    def protocol(self) -> dict:
        """How the scores are measured; two scores compare only under the same protocol."""
        return {"n": self.config.train.eval_n, "seed": EVAL_SEED, "sampler": self.sampler, "steps": self.steps,
                "spacing": self.spacing, "nfe": self.nfe, "guidance": self.guidance,
                **interval_setting(self.sampling and self.sampling.guidance_interval), "reference_split": self.split,
                "reference_n": {kind: count for kind, (_, count) in self.references.items()},
                "extractors": {kind: extractor.extractor_id for kind, extractor in self.extractors.items()}}

    def evaluate(self, net: torch.nn.Module) -> dict[str, float]:
        """{metric name: score} (train.eval_metrics: "fd", "fid") of `net`'s samples; lower is better."""
        with _rng_untouched(self.device):
            images, _ = generate_samples(net, self.config.train.eval_n, self.sampling,
                                         batch_size=self.config.sample.batch_size, seed=EVAL_SEED, progress=False)
        scores = {}
        for metric in self.metrics:
            kind = METRICS[metric].extractor
            extractor, (reference, _) = self.extractors[kind], self.references[kind]
            fake = extractor.extract(images, batch_size=FEATURE_BATCH[kind], progress=False)
            scores[metric] = fd_between(reference, feature_stats(fake, extractor.extractor_id))
        return scores

    def best_record(self, scores: dict[str, float], step: int) -> dict:
        """What checkpoints/best/best.json records: the step, the ranking metric and its score, all scores, the
        protocol."""
        metric = self.metrics[0]
        return {"step": step, "metric": metric, "score": scores[metric], "scores": scores, "protocol": self.protocol,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def is_best(self, scores: dict[str, float], best: dict | None) -> bool:
        """Whether `scores` beat the kept best (lower is better); a best measured under another protocol or metric
        (settings changed on resume) does not count."""
        metric = self.metrics[0]
        if (best is None or best.get("metric") != metric or best.get("protocol") != _as_json(self.protocol)
                or not np.isfinite(best.get("score", np.nan))):
            return bool(np.isfinite(scores[metric]))
        return scores[metric] < best["score"]


def _as_json(value):
    """`value` as it reads back from JSON (tuples as lists), for comparing with a stored record."""
    import json

    return json.loads(json.dumps(value))


@contextlib.contextmanager
def _rng_untouched(device: torch.device):
    """The global CPU (and this CUDA device's) RNG state restored on exit: evaluation draws from its own generator,
    and this guarantees that nothing it calls moves the training's random stream."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
