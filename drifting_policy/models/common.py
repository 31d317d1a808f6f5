"""Pieces shared by the action networks: the diffusion-step embedding and their input checks."""

import math

import torch
import torch.nn as nn


class SinusoidalEmbedding(nn.Module):
    """Sin/cos features of a scalar per batch element (the diffusion step), as in Transformer positions.

    Frequencies run geometrically from 1 down to 1/10000 over `dim // 2` channels; the output is
    [sin(t * f), cos(t * f)].
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding needs an even dim >= 4, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
        # Derived from `dim`, so it stays out of the state dict.
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def timesteps_for_batch(timestep, use_timestep: bool, batch_size: int, device, owner: str):
    """Check `timestep` against the network's mode and broadcast it to shape (B,).

    DDPM networks (`use_timestep=True`) need the step: an int, a 0-d tensor, or a (B,) tensor.
    One-step drifting networks (`use_timestep=False`) have no step encoder, so any step passed to
    them is a caller error rather than something to silently ignore.
    """
    if not use_timestep:
        if timestep is not None:
            raise ValueError(f"{owner} was built with use_timestep=False and takes no timestep; got {timestep!r}")
        return None
    if timestep is None:
        raise ValueError(f"{owner} was built with use_timestep=True and needs a timestep (int, 0-d or (B,) tensor)")
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0 or tuple(t.shape) == (1,):
        return t.reshape(1).expand(batch_size)
    if tuple(t.shape) != (batch_size,):
        raise ValueError(f"{owner}: timestep must be a scalar or have shape ({batch_size},), got {tuple(t.shape)}")
    return t


def check_shape(owner: str, name: str, value, expected: tuple) -> None:
    """A ValueError naming the network and the input when ``value`` is missing or not of shape ``expected``."""
    if value is None or tuple(value.shape) != expected:
        raise ValueError(f"{owner}: {name} must be {expected}, got {None if value is None else tuple(value.shape)}")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `module` (each shared tensor counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
