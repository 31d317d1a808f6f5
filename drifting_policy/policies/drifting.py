"""The drifting policy: one network evaluation (1 NFE) per action chunk.

Training (per observation): draw ``n_generated`` chunks from action-shaped Gaussian noise in one batched
pass; the demonstrated chunk is the positive, and the generated chunks are each other's negatives (the
core self-masks each sample). ``drifting.feature_drift_loss`` returns the regression onto the frozen
drifted chunks. Inference: one pass from fresh noise.

With ``max_prefix_delay`` = D > 0 (training-time real-time chunking) the condition also holds a committed
prefix (D actions from index To - 1, zero-padded) and its mask; training draws the prefix length per observation
and overwrites those positions of every generated chunk with the demonstration, so they carry no drift.
"""
from __future__ import annotations

import torch

from drifting import feature_drift_loss
from drifting_policy.policies.base import BasePolicy, register_policy
from drifting_policy.policies.config import DriftingPolicyConfig


@register_policy
class DriftingPolicy(BasePolicy):
    config_class = DriftingPolicyConfig
    uses_timestep = False

    @property
    def extra_cond_dim(self) -> int:
        return self.config.extra_noise_dim + self.config.max_prefix_delay * (self.config.action_dim + 1)

    @property
    def max_prefix_steps(self) -> int:
        return self.config.max_prefix_delay

    def noise_shapes(self, batch_size):
        c = self.config
        shapes = {"noise": (batch_size, c.horizon, c.action_dim)}
        if c.extra_noise_dim:
            shapes["extra_noise"] = (batch_size, c.extra_noise_dim)
        return shapes

    def sample_chunk(self, cond, generator=None, noise=None, prefix=None):
        """One normalised chunk (N, T, Da) per condition row, from Gaussian noise (fresh, or the given
        ``noise``): one network pass. ``prefix``: (normalised actions (N, D, Da), mask (N, D)), or None (none
        committed) when ``max_prefix_delay`` = D > 0."""
        if noise is None:
            noise = {name: torch.randn(shape, generator=generator, device=cond.device, dtype=cond.dtype)
                     for name, shape in self.noise_shapes(cond.shape[0]).items()}
        extra, D = [], self.config.max_prefix_delay
        if D:
            actions, mask = prefix if prefix is not None else (cond.new_zeros(cond.shape[0], D, self.config.action_dim),
                                                               cond.new_zeros(cond.shape[0], D))
            extra += [(actions * mask[..., None]).flatten(1), mask]
        if "extra_noise" in noise:
            extra.append(noise["extra_noise"])
        return self.model(noise["noise"], None, cond, torch.cat(extra, dim=1) if extra else None)

    def observation_losses(self, gen_features: dict, pos_features: dict) -> tuple[torch.Tensor, dict]:
        """Per-observation loss [B] and info. The core computes one feature scale and one drift normalisation
        per call; with ``drift_per_observation`` each observation is its own call (vectorised with vmap)."""
        c = self.config
        options = dict(temperatures=c.temperatures, kernel_norm=c.kernel_norm, normalize_features=c.normalize_features,
                       normalize_drift=c.normalize_drift, affinity_floor=c.affinity_floor)
        if not c.drift_per_observation:
            return feature_drift_loss(gen_features, pos_features, **options)
        per_call = torch.func.vmap(lambda gen, pos: feature_drift_loss(gen, pos, **options))
        loss, info = per_call({k: v[:, None] for k, v in gen_features.items()},
                              {k: v[:, None] for k, v in pos_features.items()})
        return loss[:, 0], {name: value.mean() for name, value in info.items()}

    def chunk_loss(self, cond, action):
        c = self.config
        B, G = action.shape[0], c.n_generated
        cond = cond.repeat_interleave(G, dim=0)
        if c.max_prefix_delay:  # a committed prefix of d demonstrated actions per observation
            D, first = c.max_prefix_delay, c.n_obs_steps - 1
            free = torch.rand(B, 1, device=action.device) < c.prefix_free_prob
            d = torch.where(free, 0, torch.randint(1, D + 1, (B, 1), device=action.device))
            mask = (torch.arange(D, device=action.device) < d).to(action.dtype).repeat_interleave(G, dim=0)
            prefix = action[:, first:first + D].repeat_interleave(G, dim=0)
            gen = self.overwrite_prefix(self.sample_chunk(cond, prefix=(prefix, mask)), prefix, mask)
        else:
            gen = self.sample_chunk(cond)
        gen = gen.view(B, G, c.horizon, c.action_dim)
        pos = action[:, None]  # (B, 1, T, Da): the demonstration is the only positive
        gen_features, pos_features = {}, {}
        if "chunk" in c.features:
            gen_features["chunk"], pos_features["chunk"] = gen.flatten(2), pos.flatten(2)
        if "step" in c.features:  # each horizon step is a location of one feature (shared scale)
            gen_features["step"], pos_features["step"] = gen, pos
        loss, info = self.observation_losses(gen_features, pos_features)
        loss = loss.mean()
        metrics = {name: value.detach() for name, value in info.items()}
        metrics["loss"] = loss.detach()
        # How far generated chunks are from the demonstration (normalised units, RMS over the chunk).
        metrics["gen_to_demo_rms"] = (gen.detach() - pos).square().mean(dim=(2, 3)).sqrt().mean()
        return loss, metrics
