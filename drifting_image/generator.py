"""The one-step image generator f(noise, class, alpha) of Drifting Models (paper A.2).

A DiT (Peebles & Xie, 2023) with the LightningDiT refinements the paper adopts: adaLN-zero blocks with SwiGLU
MLPs, RMSNorm, QK-RMSNorm and rotary position embedding. The conditioning vector is the sum of a class
embedding, an embedding of the CFG scale alpha (made like a diffusion timestep embedding) and 32 "style"
embeddings picked by random indices, which are part of the generator's noise. The conditioning drives the
adaLN modulation and also 16 in-context register tokens prepended to the patch tokens.

Tensors are channels-first: the noise and the output are [B, C, H, W].
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def adaptive_affine(tokens: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: each sample's normalized tokens [B, N, D] scaled by 1 + scale and moved by shift, both [B, 1, D]."""
    return tokens * (1 + scale) + shift


def sincos_2d_position_embedding(dim: int, grid_size: int) -> np.ndarray:
    """[grid_size**2, dim] fixed 2-D sin-cos embedding (MAE/DiT style): half the channels encode the row,
    half the column; the learned position embedding starts from it."""
    if dim % 4 != 0:
        raise ValueError(f"hidden size must be divisible by 4 for the 2-D sin-cos embedding; got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1)


class RMSNorm(nn.Module):
    """Root-mean-square normalization with a learned gain, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class ScalarEmbedder(nn.Module):
    """Embeds a scalar per sample (here the CFG scale alpha) the way DiT embeds diffusion timesteps:
    sinusoidal frequencies followed by a two-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=value.device, dtype=torch.float32) / half)
        angles = value.float()[:, None] * freqs[None]
        frequencies = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return self.mlp(frequencies.to(self.mlp[0].weight.dtype))


def rotary_tables(n: int, head_dim: int, device=None, *, bf16_tables: bool = False,
                  base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [n, head_dim] (float32) of the rotation angles position * frequency, halves repeated.

    bf16_tables builds them as the released latent_B_sota and latent_L_sota models do (bf16 compute with attention
    outside float32): positions, frequencies, their products and cos/sin each rounded to bfloat16. That merges
    positions above 256 in pairs and moves angles by up to ~1 rad; those models were trained with it. The rotation
    that uses the tables stays in float32 here (the release rotates in bf16, which is bf16 noise, not systematic).
    """
    half = head_dim // 2
    freqs = 1.0 / base ** (torch.arange(half, device=device, dtype=torch.float32) / half)
    positions = torch.arange(n, device=device, dtype=torch.float32)
    if bf16_tables:
        freqs, positions = freqs.bfloat16(), positions.bfloat16()
    angles = torch.outer(positions, freqs).repeat(1, 2)
    return torch.cos(angles).float(), torch.sin(angles).float()


def rotary_embedding(
    q: torch.Tensor, k: torch.Tensor, *, bf16_tables: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q, k [B, heads, N, head_dim] by their position along the token sequence (1-D RoPE over all
    tokens, registers first), rotating the two halves of each head as pairs. Computed in float32."""
    n, head_dim = q.shape[-2], q.shape[-1]
    half = head_dim // 2
    cos, sin = rotary_tables(n, head_dim, q.device, bf16_tables=bf16_tables)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        rotated_half = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
        return (x32 * cos + rotated_half * sin).to(x.dtype)

    return rotate(q), rotate(k)


class Attention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm and rotary embedding (``bf16_rope_tables``: see
    :func:`rotary_tables`)."""

    def __init__(self, dim: int, num_heads: int, bf16_rope_tables: bool = False):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.bf16_rope_tables = bf16_rope_tables
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary_embedding(self.q_norm(q), self.k_norm(k), bf16_tables=self.bf16_rope_tables)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class SwiGLU(nn.Module):
    """Gated MLP silu(x W1) * (x W3) W2. The hidden width is 2/3 of the plain MLP's (same parameter count),
    rounded up to a multiple of 32."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = (int(2 / 3 * int(dim * mlp_ratio)) + 31) // 32 * 32
        self.w1 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DiTBlock(nn.Module):
    """Transformer block whose pre-norms are modulated (shift, scale) and whose residual branches are gated by
    the conditioning vector; the modulation starts at zero, so each block starts as the identity."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, bf16_rope_tables: bool = False):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, bf16_rope_tables)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # Six [B, 1, D] vectors from the conditioning: (shift, scale, gate) for the attention, then for the MLP.
        attention, mlp = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        for branch, norm, (shift, scale, gate) in ((self.attn, self.norm1, attention.chunk(3, dim=-1)),
                                                   (self.mlp, self.norm2, mlp.chunk(3, dim=-1))):
            x = x + gate * branch(adaptive_affine(norm(x), shift, scale))
        return x


class FinalLayer(nn.Module):
    """Modulated norm and a linear map from each token to its patch of output pixels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(adaptive_affine(self.norm(x), shift, scale))


class DriftingDiT(nn.Module):
    """f(noise, labels, alpha, style) -> sample, all in one forward pass.

    noise [B, C, H, W] (standard normal), labels [B] int, alpha [B] float (CFG scale, 1 = no guidance),
    style [B, num_style] int in [0, style_vocab) or None to draw it (from ``rng``). Returns [B, C_out, H, W].
    ``bf16_rope_tables`` reproduces the rotary tables of the released latent_B_sota / latent_L_sota models
    (see :func:`rotary_tables`); ``drifting_image.official`` switches it on for them.
    """

    def __init__(
        self,
        input_size: int = 32,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        num_registers: int = 16,
        num_style: int = 32,
        style_vocab: int = 64,
        out_channels: int | None = None,
        bf16_rope_tables: bool = False,
    ):
        super().__init__()
        if input_size % patch_size != 0:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.input_size, self.in_channels, self.patch_size = input_size, in_channels, patch_size
        self.out_channels = in_channels if out_channels is None else out_channels
        self.num_classes, self.num_registers = num_classes, num_registers
        self.num_style, self.style_vocab = num_style, style_vocab
        self.mlp_ratio, self.bf16_rope_tables = mlp_ratio, bf16_rope_tables
        self.grid_size = input_size // patch_size

        # Conditioning vector c = class + style + 0.02 * RMSNorm(alpha embedding).
        self.class_embed = nn.Embedding(num_classes, hidden_size)
        self.style_embed = nn.Parameter(torch.zeros(num_style, style_vocab, hidden_size))  # one table per index
        self.alpha_embed = ScalarEmbedder(hidden_size)
        self.alpha_norm = RMSNorm(hidden_size)

        # Tokens: 16 registers made from c, then the patches with a learned position embedding.
        self.x_embed = nn.Linear(patch_size * patch_size * in_channels, hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, hidden_size))
        self.register_proj = nn.Linear(hidden_size, hidden_size)
        self.register_embed = nn.Parameter(torch.zeros(1, num_registers, hidden_size))

        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, bf16_rope_tables) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(xavier)
        for table in (self.class_embed.weight, self.style_embed, self.register_embed):
            nn.init.normal_(table, std=0.02)
        for layer in (self.alpha_embed.mlp[0], self.alpha_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if not self.pos_embed.is_meta:
            pos = sincos_2d_position_embedding(self.pos_embed.shape[-1], self.grid_size)
            self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        # adaLN-zero: every residual branch and the output start at zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    def draw_style(self, n: int, rng: torch.Generator | None = None, device=None) -> torch.Tensor:
        """[n, num_style] random style indices (the discrete part of the generator's noise)."""
        return torch.randint(self.style_vocab, (n, self.num_style), generator=rng, device=device)

    def conditioning(self, labels: torch.Tensor, alpha: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """[B, hidden] conditioning vector from class labels, CFG scales and style indices."""
        if not labels.is_meta and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}); got [{labels.min()}, {labels.max()}]")
        if style.shape != (labels.shape[0], self.num_style):
            raise ValueError(f"style must be [{labels.shape[0]}, {self.num_style}]; got {tuple(style.shape)}")
        tables = torch.arange(self.num_style, device=style.device)
        style_sum = self.style_embed[tables, style].sum(dim=1)
        alpha_vec = self.alpha_norm(self.alpha_embed(alpha))
        return self.class_embed(labels) + style_sum + 0.02 * alpha_vec

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, grid**2, p*p*C], patches in row-major order."""
        B, C, _, _ = x.shape
        p, g = self.patch_size, self.grid_size
        return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, grid**2, p*p*C] -> [B, C, H, W]."""
        B = tokens.shape[0]
        p, g, C = self.patch_size, self.grid_size, self.out_channels
        return tokens.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)

    def forward(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor,
        alpha: torch.Tensor | float = 1.0,
        style: torch.Tensor | None = None,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        if noise.shape[1:] != self.sample_shape:
            raise ValueError(f"noise must be [B, {', '.join(map(str, self.sample_shape))}]; got {tuple(noise.shape)}")
        B = noise.shape[0]
        alpha = torch.as_tensor(alpha, dtype=torch.float32, device=noise.device).expand(B)
        if style is None:
            style = self.draw_style(B, rng=rng, device=noise.device)
        c = self.conditioning(labels, alpha, style)

        patches = self.x_embed(self.patchify(noise)) + self.pos_embed
        registers = self.register_proj(c).unsqueeze(1) + self.register_embed
        x = torch.cat([registers, patches], dim=1)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)[:, self.num_registers:]
        return self.unpatchify(x)


@dataclass(frozen=True)
class GeneratorSize:
    input_size: int
    in_channels: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int


# Paper Table 8: latent models see SD-VAE latents 32x32x4, pixel models 256x256x3, both as 16x16 = 256 tokens.
# The tiny sizes are ours, for CPU runs on 32x32 images (MNIST: in_channels=1).
GENERATOR_SIZES: dict[str, GeneratorSize] = {
    "B/2": GeneratorSize(32, 4, 2, 768, 12, 12),
    "L/2": GeneratorSize(32, 4, 2, 1024, 24, 16),
    "B/16": GeneratorSize(256, 3, 16, 768, 12, 12),
    "L/16": GeneratorSize(256, 3, 16, 1024, 24, 16),
    "S/2": GeneratorSize(32, 3, 2, 384, 12, 6),
    "T/2": GeneratorSize(32, 1, 2, 128, 4, 4),
    "T/4": GeneratorSize(32, 1, 4, 128, 4, 4),
}


def build_generator(size: str, **overrides) -> DriftingDiT:
    """A generator of a named size; ``overrides`` replace any constructor argument (e.g. in_channels=3)."""
    if size not in GENERATOR_SIZES:
        raise ValueError(f"unknown generator size {size!r}; choose from {sorted(GENERATOR_SIZES)}")
    return DriftingDiT(**{**vars(GENERATOR_SIZES[size]), **overrides})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_table(num_classes: int = 1000) -> dict[str, int]:
    """Parameter count of every named size (built on the meta device, so nothing is allocated)."""
    with torch.device("meta"):
        return {name: count_parameters(build_generator(name, num_classes=num_classes)) for name in GENERATOR_SIZES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image generator",
                                     description="The generator sizes and their parameter counts (1000 classes).")
    parser.parse_args(argv)
    for name, n in parameter_table().items():
        s = GENERATOR_SIZES[name]
        print(f"{name:>5}  {s.input_size}x{s.input_size}x{s.in_channels}  hidden {s.hidden_size:4d}  depth {s.depth:2d}"
              f"  {n / 1e6:8.2f}M parameters (1000 classes)")


if __name__ == "__main__":
    main()
