"""Diffusion Policy's DDPM baseline on the same networks (``use_timestep=True``).

As DP's ``DiffusionUnetLowdimPolicy`` / ``DiffusionUnetHybridImagePolicy`` with ``obs_as_global_cond``
(and the transformer policy with ``obs_as_cond``): train with diffusers' ``DDPMScheduler`` (noise a
normalised chunk at a uniformly drawn step, regress the noise), sample by iterating the scheduler from
Gaussian noise. Inference uses DDPM (all training steps) or DDIM with ``num_inference_steps``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from drifting_policy.policies.base import BasePolicy, register_policy
from drifting_policy.policies.config import DDPM_SAMPLERS, DiffusionPolicyConfig


@register_policy
class DiffusionPolicy(BasePolicy):
    config_class = DiffusionPolicyConfig
    uses_timestep = True

    def __init__(self, config):
        super().__init__(config)
        c = self.config
        schedule = dict(
            num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
            beta_schedule=c.beta_schedule, clip_sample=c.clip_sample, prediction_type=c.prediction_type,
        )
        self.noise_scheduler = DDPMScheduler(variance_type=c.variance_type, **schedule)
        # DP's DDIM config: the final step goes all the way to alpha = 1, no timestep offset.
        self._samplers = {
            "ddpm": self.noise_scheduler,
            "ddim": DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **schedule),
        }

    def set_sampler(self, sampler: str, num_inference_steps: int | None = None) -> None:
        """Switch inference between 'ddpm' and 'ddim' (None steps = num_train_timesteps); saved in the config."""
        if sampler not in DDPM_SAMPLERS:
            raise ValueError(f"sampler must be one of {DDPM_SAMPLERS}; got {sampler!r}")
        self.config.sampler, self.config.num_inference_steps = sampler, num_inference_steps

    def sample_chunk(self, cond, generator=None, noise=None):
        c = self.config
        scheduler = self._samplers[c.sampler]
        scheduler.set_timesteps(c.num_inference_steps or c.num_train_timesteps)
        chunk = torch.randn((cond.shape[0], c.horizon, c.action_dim), generator=generator, device=cond.device,
                            dtype=cond.dtype)
        for t in scheduler.timesteps:
            model_output = self.model(chunk, t, cond)
            chunk = scheduler.step(model_output, t, chunk, generator=generator).prev_sample
        return chunk

    def chunk_loss(self, cond, action):
        c = self.config
        noise = torch.randn_like(action)
        timesteps = torch.randint(0, c.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.noise_scheduler.add_noise(action, noise, timesteps)
        prediction = self.model(noisy, timesteps, cond)
        target = noise if c.prediction_type == "epsilon" else action
        loss = F.mse_loss(prediction, target)
        return loss, {"loss": loss.detach()}
