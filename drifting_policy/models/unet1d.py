"""1-D temporal U-Net over action chunks, FiLM-conditioned on the observation (and the diffusion step).

Same architecture as Diffusion Policy's ConditionalUnet1D: residual blocks of Conv1d + GroupNorm + Mish,
each modulated per channel by a linear map of the condition vector; stride-2 convolutions halve the
horizon between levels and transposed convolutions restore it.

The condition is what both backbones take: ``cond`` (B, To, F), one feature vector per observation step, stacked
here into one vector (DP's ``obs_as_global_cond``), and ``extra`` (B, E), per-sample values a method adds
(extra noise, a committed action prefix), appended once.

The network serves two methods:
  * DDPM (`use_timestep=True`): input a noisy action chunk and the step, output the predicted noise.
  * Drifting (`use_timestep=False`): input action-shaped Gaussian noise, output the action chunk in one
    evaluation. There is no step encoder at all; the condition is the observation alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn as nn

from drifting_policy.models.common import SinusoidalEmbedding, check_shape, timesteps_for_batch


class Conv1dBlock(nn.Sequential):
    """Conv1d (length-preserving) -> GroupNorm -> Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two Conv1dBlocks with FiLM between them and a residual connection around both.

    FiLM maps the condition vector to a per-channel scale and bias (`predict_scale=True`) or to a bias only.
    """

    def __init__(self, in_channels, out_channels, cond_dim, kernel_size, n_groups, predict_scale):
        super().__init__()
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.predict_scale = predict_scale
        film_channels = 2 * out_channels if predict_scale else out_channels
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_channels))
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        film = self.film(cond).unsqueeze(-1)  # (B, C or 2C, 1), broadcast over the horizon
        if self.predict_scale:
            scale, bias = film.chunk(2, dim=1)
            h = scale * h + bias
        else:
            h = h + film
        h = self.conv2(h)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """U-Net over (B, T, input_dim) action chunks; output has the same shape.

    Args:
        input_dim: action dimension.
        cond_dim: F, the observation features per step (0: no observation condition; then `use_timestep` must
            be True).
        n_obs_steps: To, the observation steps in the condition.
        extra_cond_dim: E, per-sample values appended to the stacked condition.
        down_dims: channels per level; the horizon is halved len(down_dims) - 1 times, so T must be
            divisible by 2 ** (len(down_dims) - 1).
        kernel_size, n_groups: of every Conv1dBlock.
        diffusion_step_embed_dim: width of the step embedding (sinusoidal features + MLP).
        cond_predict_scale: FiLM with scale and bias (True) or bias only.
        use_timestep: build the step encoder (DDPM) or not (drifting, one step).
    """

    def __init__(
        self,
        input_dim: int,
        cond_dim: int,
        n_obs_steps: int = 1,
        extra_cond_dim: int = 0,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        diffusion_step_embed_dim: int = 256,
        cond_predict_scale: bool = True,
        use_timestep: bool = True,
    ):
        super().__init__()
        if len(down_dims) < 1:
            raise ValueError("ConditionalUnet1D needs at least one entry in down_dims")
        self.input_dim = input_dim
        self.cond_shape = (n_obs_steps, cond_dim) if cond_dim else None
        self.extra_cond_dim = extra_cond_dim
        self.use_timestep = use_timestep
        self.horizon_multiple = 2 ** (len(down_dims) - 1)

        film_cond_dim = cond_dim * n_obs_steps + extra_cond_dim
        self.step_encoder = None
        if use_timestep:
            dsed = diffusion_step_embed_dim
            self.step_encoder = nn.Sequential(
                SinusoidalEmbedding(dsed),
                nn.Linear(dsed, 4 * dsed),
                nn.Mish(),
                nn.Linear(4 * dsed, dsed),
            )
            film_cond_dim += dsed
        if film_cond_dim == 0:
            raise ValueError("ConditionalUnet1D needs a condition: set cond_dim > 0 or use_timestep=True")

        def block(c_in, c_out):
            return FiLMResidualBlock(c_in, c_out, film_cond_dim, kernel_size, n_groups, cond_predict_scale)

        channels = [input_dim, *down_dims]
        level_io = list(pairwise(channels))

        self.down_levels = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(level_io):
            is_deepest = level == len(level_io) - 1
            halve = nn.Identity() if is_deepest else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down_levels.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), halve]))

        self.mid_blocks = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])

        # Each up level takes the deeper features concatenated with the skip of the same resolution
        # and doubles the horizon; the full-resolution skip of level 0 is not used (as in DP).
        self.up_levels = nn.ModuleList()
        for c_in, c_out in reversed(level_io[1:]):
            double = nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1)
            self.up_levels.append(nn.ModuleList([block(2 * c_out, c_in), block(c_in, c_in), double]))

        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    @classmethod
    def from_config(cls, config, cond_dim: int, extra_cond_dim: int, use_timestep: bool) -> ConditionalUnet1D:
        """The network a policy config describes (its action_dim, n_obs_steps and U-Net fields)."""
        c = config
        return cls(c.action_dim, cond_dim, c.n_obs_steps, extra_cond_dim, c.down_dims, c.kernel_size, c.n_groups,
                   c.diffusion_step_embed_dim, c.cond_predict_scale, use_timestep=use_timestep)

    def get_optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: one, every parameter decayed (as DP's U-Net policies)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    def forward(self, sample: torch.Tensor, timestep=None, cond: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, T, input_dim); timestep int / 0-d / (B,) iff use_timestep; cond (B, To, F); extra (B, E)."""
        if sample.ndim != 3 or sample.shape[-1] != self.input_dim:
            raise ValueError(f"ConditionalUnet1D: sample must be (B, T, {self.input_dim}), got {tuple(sample.shape)}")
        batch, horizon = sample.shape[:2]
        if horizon % self.horizon_multiple:
            raise ValueError(
                f"ConditionalUnet1D: horizon T={horizon} must be divisible by {self.horizon_multiple} "
                f"(2 ** (len(down_dims) - 1))"
            )

        cond_parts = []
        t = timesteps_for_batch(timestep, self.use_timestep, batch, sample.device, "ConditionalUnet1D")
        if t is not None:
            cond_parts.append(self.step_encoder(t))
        if self.cond_shape is not None:
            check_shape("ConditionalUnet1D", "cond", cond, (batch, *self.cond_shape))
            cond_parts.append(cond.flatten(1))
        elif cond is not None:
            raise ValueError("ConditionalUnet1D was built with cond_dim=0 and takes no cond")
        if self.extra_cond_dim:
            check_shape("ConditionalUnet1D", "extra", extra, (batch, self.extra_cond_dim))
            cond_parts.append(extra)
        elif extra is not None:
            raise ValueError("ConditionalUnet1D was built with extra_cond_dim=0 and takes no extra")
        cond = torch.cat(cond_parts, dim=-1)

        x = sample.transpose(1, 2)  # (B, C, T) for Conv1d
        skips = []
        for block1, block2, halve in self.down_levels:
            x = block2(block1(x, cond), cond)
            skips.append(x)
            x = halve(x)
        for mid in self.mid_blocks:
            x = mid(x, cond)
        for block1, block2, double in self.up_levels:
            x = torch.cat([x, skips.pop()], dim=1)
            x = double(block2(block1(x, cond), cond))
        return self.final(x).transpose(1, 2)
