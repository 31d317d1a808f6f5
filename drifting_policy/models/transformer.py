"""Encoder-decoder Transformer over action chunks, the architecture of Diffusion Policy's TransformerForDiffusion.

The condition tokens are [diffusion-step token (DDPM only)] + one token per observation step; a small
encoder (an MLP, or Transformer layers) turns them into the memory. The decoder runs over one token per
action step, with causal self-attention and cross-attention that lets action step t see the step token
and observations 0..t only.

The condition is what both backbones take: ``cond`` (B, To, F), one token per observation step, and ``extra``
(B, E), per-sample values a method adds (extra noise, a committed action prefix), appended to every observation
token.

As with the U-Net, `use_timestep=False` gives the one-step drifting network: no step token at all.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from drifting_policy.models.common import SinusoidalEmbedding, check_shape, timesteps_for_batch


class ActionTransformer(nn.Module):
    """Maps (B, T, input_dim) to (B, T, output_dim), conditioned on (B, To, cond_dim) observations.

    Args:
        input_dim, output_dim: action dimension in and out.
        horizon: T, the number of action tokens (fixed: positions and masks are built for it).
        n_obs_steps: To, the number of observation tokens.
        cond_dim: per-step observation size; 0 means no observation condition (then `use_timestep`
            must be True and the memory is the step token alone).
        extra_cond_dim: E, per-sample values appended to every observation token.
        n_layer, n_head, n_emb: decoder depth, heads and width.
        p_drop_emb: dropout on the token embeddings; p_drop_attn: dropout inside the Transformer layers.
        causal_attn: causal self-attention over actions and the observation memory mask described above.
        n_cond_layers: 0 encodes the condition tokens with a per-token MLP, > 0 with that many
            Transformer encoder layers.
        use_timestep: add the diffusion-step token (DDPM) or not (drifting, one step).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        horizon: int,
        n_obs_steps: int,
        cond_dim: int,
        extra_cond_dim: int = 0,
        n_layer: int = 8,
        n_head: int = 4,
        n_emb: int = 256,
        p_drop_emb: float = 0.0,
        p_drop_attn: float = 0.3,
        causal_attn: bool = True,
        n_cond_layers: int = 0,
        use_timestep: bool = True,
    ):
        super().__init__()
        if cond_dim == 0 and not use_timestep:
            raise ValueError("ActionTransformer needs a condition: set cond_dim > 0 or use_timestep=True")
        if extra_cond_dim and cond_dim == 0:
            raise ValueError("ActionTransformer appends extra_cond_dim values to the observation tokens: "
                             "needs cond_dim > 0")
        self.input_dim = input_dim
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps if cond_dim > 0 else 0
        self.cond_dim = cond_dim
        self.extra_cond_dim = extra_cond_dim
        self.use_timestep = use_timestep
        n_cond_tokens = int(use_timestep) + self.n_obs_steps

        # Condition tokens -> memory.
        self.step_emb = SinusoidalEmbedding(n_emb) if use_timestep else None
        self.obs_emb = nn.Linear(cond_dim + extra_cond_dim, n_emb) if cond_dim > 0 else None
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_cond_tokens, n_emb))
        if n_cond_layers > 0:
            layer = nn.TransformerEncoderLayer(
                n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu", batch_first=True, norm_first=True
            )
            self.cond_encoder = nn.TransformerEncoder(layer, n_cond_layers, enable_nested_tensor=False)
        else:
            self.cond_encoder = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))

        # Action tokens -> output.
        self.input_emb = nn.Linear(input_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        layer = nn.TransformerDecoderLayer(
            n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, n_layer)
        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, output_dim)

        # Boolean masks, True = may not attend; None without causal attention. Derived from the sizes,
        # so not saved.
        self_attn_mask = memory_mask = None
        if causal_attn:
            steps = torch.arange(horizon)
            self_attn_mask = steps[None, :] > steps[:, None]
            # Observation token j belongs to step j; the step token (first, if present) is seen by all.
            token_step = torch.cat([torch.full((int(use_timestep),), -1), torch.arange(self.n_obs_steps)])
            memory_mask = token_step[None, :] > steps[:, None]
        self.register_buffer("self_attn_mask", self_attn_mask, persistent=False)
        self.register_buffer("memory_mask", memory_mask, persistent=False)

        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module):
        # GPT-style: small normal weights, zero biases (LayerNorms keep their default 1 / 0).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)

    def get_optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: weight decay on Linear and attention projection weights only;
        biases, LayerNorms and the position embeddings are not decayed."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                decays = isinstance(module, (nn.Linear, nn.MultiheadAttention)) and name.endswith("weight")
                (decay if decays else no_decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    @classmethod
    def from_config(cls, config, cond_dim: int, extra_cond_dim: int, use_timestep: bool) -> ActionTransformer:
        """The network a policy config describes (its action_dim, horizon, n_obs_steps and transformer fields)."""
        c = config
        return cls(c.action_dim, c.action_dim, c.horizon, c.n_obs_steps, cond_dim, extra_cond_dim, c.n_layer,
                   c.n_head, c.n_emb, c.p_drop_emb, c.p_drop_attn, c.causal_attn, c.n_cond_layers,
                   use_timestep=use_timestep)

    def forward(self, sample: torch.Tensor, timestep=None, cond: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, T, input_dim); timestep int / 0-d / (B,) iff use_timestep; cond (B, To, cond_dim);
        extra (B, extra_cond_dim)."""
        if sample.ndim != 3 or tuple(sample.shape[1:]) != (self.horizon, self.input_dim):
            raise ValueError(
                f"ActionTransformer: sample must be (B, {self.horizon}, {self.input_dim}), got {tuple(sample.shape)}"
            )
        batch = sample.shape[0]

        tokens = []
        t = timesteps_for_batch(timestep, self.use_timestep, batch, sample.device, "ActionTransformer")
        if t is not None:
            tokens.append(self.step_emb(t)[:, None, :])
        if self.obs_emb is not None:
            check_shape("ActionTransformer", "cond", cond, (batch, self.n_obs_steps, self.cond_dim))
            if self.extra_cond_dim:
                check_shape("ActionTransformer", "extra", extra, (batch, self.extra_cond_dim))
                cond = torch.cat([cond, extra[:, None, :].expand(-1, cond.shape[1], -1)], dim=-1)
            elif extra is not None:
                raise ValueError("ActionTransformer was built with extra_cond_dim=0 and takes no extra")
            tokens.append(self.obs_emb(cond))
        elif cond is not None:
            raise ValueError("ActionTransformer was built with cond_dim=0 and takes no cond")
        memory = self.cond_encoder(self.drop(torch.cat(tokens, dim=1) + self.cond_pos_emb))

        x = self.drop(self.input_emb(sample) + self.pos_emb)
        # Saying whether the mask is causal (torch would otherwise compare it with a causal mask, a data-dependent
        # check that torch.export cannot trace) keeps one graph for export; it is what torch detects anyway.
        x = self.decoder(x, memory, tgt_mask=self.self_attn_mask, memory_mask=self.memory_mask,
                         tgt_is_causal=self.self_attn_mask is not None)
        return self.head(self.ln_f(x))
