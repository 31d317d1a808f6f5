"""Exponential moving average of a model's parameters (and a copy of its buffers)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = decay * ema + (1 - decay) * param`` after every optimizer step.

    ``power`` gives Diffusion Policy's warm-up: decay_t = min(max_decay, 1 - (1 + t / inv_gamma)^-power),
    so early averages forget quickly; with ``power=None`` the decay is the constant ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, power: float | None = None,
                 inv_gamma: float = 1.0, min_decay: float = 0.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.power, self.inv_gamma, self.min_decay = decay, power, inv_gamma, min_decay
        self.step = 0

    def current_decay(self) -> float:
        if self.power is None:
            return self.decay
        value = 1.0 - (1.0 + self.step / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.decay))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        self.step += 1

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
