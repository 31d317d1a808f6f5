"""A synthetic bimodal policy task: does a policy keep both modes of the demonstrations?

Observation o ~ U[-1, 1] (one step, 1-D). The demonstrated chunk of T 2-D actions is a straight line
from the origin, scaled by s = 0.5 + |o| and pointing up-right or down-left with probability 1/2 each:

    action[t] = m * s * (t + 1) / T * (1, 1) / sqrt(2),    m = +1 or -1

A policy that averages the modes outputs the origin; one that collapses keeps one direction. We count
a generated chunk as *on a mode* when its RMS distance (over the chunk, data units) to the nearest of the
two demonstrated chunks for its observation is below ``tolerance``; the mode shares are the fractions of
all samples on each mode.

The metric takes any object with ``eval()``, ``config.horizon`` and ``predict_action(obs_dict, generator=...)``
returning ``{'action_pred': (N, T, 2)}``, so the task needs no policy code. Training policies on it and the
sweep that set the drifting policy's defaults: ``benchmarks/bimodal_modes.py``.
"""
from __future__ import annotations

import math

import torch

DIRECTION = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)


def mode_chunks(obs: torch.Tensor, horizon: int) -> torch.Tensor:
    """The two demonstrated chunks per observation: obs (N,) -> (N, 2, T, 2), [up-right, down-left]."""
    ramp = torch.arange(1, horizon + 1, dtype=torch.float32) / horizon
    line = (0.5 + obs.abs())[:, None, None] * ramp[None, :, None] * DIRECTION  # (N, T, 2)
    return torch.stack([line, -line], dim=1)


def bimodal_batch(batch_size: int, horizon: int = 8, generator: torch.Generator | None = None) -> dict:
    """{'obs': (B, 1, 1), 'action': (B, T, 2)} with each demonstration's mode drawn with probability 1/2."""
    obs = torch.rand(batch_size, generator=generator) * 2 - 1
    mode = torch.randint(0, 2, (batch_size,), generator=generator)
    action = mode_chunks(obs, horizon)[torch.arange(batch_size), mode]
    return {"obs": obs[:, None, None], "action": action}


@torch.no_grad()
def evaluate_bimodal(policy, n_obs: int = 64, samples_per_obs: int = 16, tolerance: float = 0.1,
                     seed: int = 1) -> dict[str, float]:
    """Shares of generated chunks on a mode and on each mode, the mean distance to the nearest mode, and the
    share nearer the up-right mode (within any distance). The two modes are at least 0.63 apart (o = 0)."""
    policy.eval()
    obs = torch.linspace(-1, 1, n_obs).repeat_interleave(samples_per_obs)
    chunks = policy.predict_action({"obs": obs[:, None, None]}, generator=torch.Generator().manual_seed(seed))
    modes = mode_chunks(obs, policy.config.horizon)  # (N, 2, T, 2)
    distance = (chunks["action_pred"][:, None] - modes).square().sum(-1).mean(-1).sqrt()  # (N, 2) RMS over T
    nearest_distance, nearest = distance.min(dim=1)
    on_mode = nearest_distance < tolerance
    return {
        "on_mode": float(on_mode.float().mean()),
        "up_right": float((on_mode & (nearest == 0)).float().mean()),
        "down_left": float((on_mode & (nearest == 1)).float().mean()),
        "mean_distance": float(nearest_distance.mean()),
        "nearest_up_right": float((nearest == 0).float().mean()),  # share nearer the up-right mode, any distance
    }
