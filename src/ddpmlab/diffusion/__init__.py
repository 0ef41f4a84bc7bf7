"""The noise process: schedules, the forward process, posteriors, parameterisations, the loss."""

from ddpmlab.diffusion.nll import nll_bits_per_dim
from ddpmlab.diffusion.process import (diffusion_loss, min_snr_weight, predict_eps_from_v, predict_eps_from_x0,
                                       predict_x0_from_eps, predict_x0_from_v, q_posterior, q_sample, training_target,
                                       v_from_x0_eps, x0_and_eps)
from ddpmlab.diffusion.schedule import NoiseSchedule, gather

__all__ = [
    "NoiseSchedule", "gather", "q_sample", "q_posterior", "predict_x0_from_eps", "predict_eps_from_x0",
    "v_from_x0_eps", "predict_x0_from_v", "predict_eps_from_v", "x0_and_eps", "training_target",
    "min_snr_weight", "diffusion_loss", "nll_bits_per_dim",
]
