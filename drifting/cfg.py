"""Classifier-free guidance through unconditional negatives (paper 3.5 and A.7).

A generated sample of class c is repelled by its own group and by N_unc unconditional real samples, each
weighted by w. The generator then learns q(.|c) = alpha p(.|c) - (alpha - 1) p(.), with alpha an input of the
network, so guidance stays one step at inference.
"""

from __future__ import annotations

import torch


def sample_cfg_alpha(
    n: int,
    *,
    k: float = 3.0,
    alpha_min: float = 1.0,
    alpha_max: float = 4.0,
    p_alpha_one: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw n CFG scales on [alpha_min, alpha_max] with density proportional to alpha^-k (inverse-CDF sampling).

    With probability ``p_alpha_one`` a draw is exactly 1 (the L/2 latent model uses 0.5).
    """
    if not 1.0 <= alpha_min < alpha_max:
        raise ValueError(f"need 1 <= alpha_min < alpha_max; got alpha_min={alpha_min}, alpha_max={alpha_max}")
    if not 0.0 <= p_alpha_one <= 1.0:
        raise ValueError(f"p_alpha_one must be a probability; got {p_alpha_one}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if abs(k - 1.0) < 1e-12:
        alpha = alpha_min * (alpha_max / alpha_min) ** u
    else:
        e = 1.0 - k
        lo, hi = alpha_min**e, alpha_max**e
        alpha = (lo + u * (hi - lo)) ** (1.0 / e)
    if p_alpha_one > 0:
        ones = torch.rand(n, generator=generator, dtype=torch.float64) < p_alpha_one
        alpha = torch.where(ones, torch.ones_like(alpha), alpha)
    return alpha.float()


def unconditional_weight(alpha: torch.Tensor | float, n_gen: int, n_unc: int) -> torch.Tensor:
    """Weight w of each unconditional negative for CFG scale alpha: w = (alpha - 1)(G - 1) / N_unc (paper A.7)."""
    if n_unc < 1 or n_gen < 2:
        raise ValueError(f"CFG needs n_unc >= 1 and n_gen >= 2; got n_unc={n_unc}, n_gen={n_gen}")
    alpha = torch.as_tensor(alpha, dtype=torch.float32)
    if (alpha < 1).any():
        raise ValueError("alpha must be >= 1")
    return (alpha - 1.0) * (n_gen - 1) / n_unc
