"""The VAE tokenizer of latent-space generation (paper Sec. 4: SD-VAE): a diffusers ``AutoencoderKL`` read from a
local folder.

Generators and cached latents live in the scaled space (z - shift_factor) * scaling_factor, as in LDM and DiT
(SD-VAE: scaling factor 0.18215, no shift); ``encode`` and ``decode`` convert between that space and images in
[-1, 1]. Nothing is downloaded: the folder must hold the model's ``config.json`` and weights: a copy of
``stabilityai/sd-vae-ft-mse``, the VAE the released models were trained and evaluated with (its encoder is
sd-vae-ft-ema's, so cached latents are the same; decoded pixels are not).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


def load_vae(folder: str | Path, device: torch.device | str = "cpu") -> AutoencoderKL:
    # Imported here, not at the top: diffusers takes seconds to import and pixel-space models never need it.
    from diffusers import AutoencoderKL

    # low_cpu_mem_usage=False: the VAE is small, and this loads it without the optional `accelerate` package.
    vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
    return vae.to(device).eval().requires_grad_(False)


def latent_shift_and_scale(vae: AutoencoderKL) -> tuple[float, float]:
    return getattr(vae.config, "shift_factor", None) or 0.0, vae.config.scaling_factor


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] -> scaled latents [N, C, H/f, W/f] float32 on the CPU: a draw from the
    VAE's posterior, as DiT's training takes (``generator``: a CPU random generator for that draw)."""
    posterior = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    shift, scale = latent_shift_and_scale(vae)
    return ((posterior.sample(generator) - shift) * scale).float().cpu()


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [N, C, h, w] -> images [N, 3, f*h, f*w] in [-1, 1], float32 on the CPU."""
    shift, scale = latent_shift_and_scale(vae)
    images = vae.decode(latents.to(vae.device, vae.dtype) / scale + shift).sample
    return images.float().clamp(-1, 1).cpu()
