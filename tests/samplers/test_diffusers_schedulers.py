"""Ancestral sampling (σ² = β and β̃) and DDIM follow diffusers' DDPMScheduler and DDIMScheduler step by step from
the same x_T with the same per-step noise, clipping x̂_0 as their config says; the schedules are imported from those
configs (ddpmlab.store.diffusers_format)."""

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.samplers import sample
from ddpmlab.store.diffusers_format import diffusion_config, sample_config, scheduler_betas

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")


class Wobbly:
    """A deterministic stand-in for a network whose x̂_0 leaves [−1, 1] often, so that clipping matters."""

    def __init__(self, T: int):
        self.T = T

    def __call__(self, x, t, labels=None):
        scale = (t.float() / self.T)[:, None, None, None]
        return 0.8 * x + torch.sin(3 * x) * (1 - scale) + 0.2 * scale


def x_T():
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variance_type,prediction", [("fixed_large", "epsilon"), ("fixed_small", "epsilon"),
                                                      ("fixed_large", "v_prediction")])
def test_ddpm_follows_ddpmscheduler_step_by_step(variance_type, prediction):
    config = {"num_train_timesteps": 1000, "beta_schedule": "linear", "variance_type": variance_type,
              "clip_sample": True, "prediction_type": prediction}
    scheduler = diffusers.DDPMScheduler(**config)
    scheduler.set_timesteps(1000)
    model, generator = Wobbly(1000), torch.Generator().manual_seed(1)
    x = x_T()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t.repeat(len(x))), t, x, generator=generator).prev_sample
    diffusion, sampling = diffusion_config(config), sample_config(config)
    assert sampling.variance == {"fixed_large": "beta", "fixed_small": "posterior"}[variance_type]
    ours = sample(model, NoiseSchedule(scheduler_betas(config)), x.shape, sampler="ddpm", variance=sampling.variance,
                  prediction=diffusion.prediction, clip_denoised=sampling.clip_denoised, noise=x_T(),
                  generator=torch.Generator().manual_seed(1))
    assert (ours - x).abs().max().item() < 1e-4


@pytest.mark.parametrize("eta,clip", [(0.0, True), (1.0, True), (0.0, False)])
def test_ddim_follows_ddimscheduler_step_by_step(eta, clip):
    config = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
              "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": clip}
    scheduler = diffusers.DDIMScheduler(**{k: v for k, v in config.items() if not k.startswith("_")})
    scheduler.set_timesteps(50)
    model, generator = Wobbly(1000), torch.Generator().manual_seed(2)
    x = x_T()
    for t in scheduler.timesteps:  # ddpmlab's ε̂ is the one consistent with the clipped x̂_0
        x = scheduler.step(model(x, t.repeat(len(x))), t, x, eta=eta, use_clipped_model_output=True,
                           generator=generator).prev_sample
    sampling = sample_config(config)
    assert sampling.sampler == "ddim" and sampling.clip_denoised == clip
    ours = sample(model, NoiseSchedule(scheduler_betas(config)), x.shape, sampler="ddim", steps=50, eta=eta,
                  clip_denoised=clip, noise=x_T(), generator=torch.Generator().manual_seed(2))
    assert (ours - x).abs().max().item() < 1e-4
