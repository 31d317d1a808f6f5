"""Multi-scale features phi(x) for the image drifting loss (paper A.5).

Every feature is its own key with shape [B, L, C]: L locations that share one normalization scale (paper A.6),
each a C-dim vector. Reshaped to [B_groups, N, L, C], the dict goes straight into
``drifting.feature_drift_loss``, which computes one drifting loss per key and sums them.

Keys (names as in the released code):
- 'global': the whole flattened sample, the vanilla loss without phi.
- 'norm_x': per-channel RMS of the encoder's input (the paper says the mean of x^2; the code uses its root).
- for the stem ('conv1'), each stage output ('layer1'..'layer4') and every second residual block of each stage
  ('layer3_blk2', ...): the per-location vectors (key = map name), the global mean and std ('_mean', '_std'),
  and means and stds over 2x2 and 4x4 patches ('_mean_2', '_std_2', '_mean_4', '_std_4').

The cost of the drifting loss grows with the total number of locations (one kernel per label, key and location),
most of which are the per-location vectors of the large maps; ``max_locations`` drops every key with more
locations than that (e.g. 64 keeps a 32x32 map's 4x4-patch statistics but not its 1024 per-location vectors),
which is what makes the MAE-feature loss affordable on a CPU.
"""

from __future__ import annotations

import torch

from drifting_image.mae import ResNetMAE, fold_patches


def _std(x: torch.Tensor, dim, eps: float = 1e-6) -> torch.Tensor:
    """Standard deviation with a floor inside the root, so its gradient stays finite for constant inputs.

    Two passes (mean, then mean squared deviation) instead of ``Tensor.var``: the same numbers, and several
    times faster on the CPU for the short reductions over 2x2 and 4x4 cells.
    """
    return ((x - x.mean(dim=dim, keepdim=True)).square().mean(dim=dim) + eps).sqrt()


def map_features(
    name: str, fmap: torch.Tensor, patch_sizes: tuple[int, ...] = (2, 4), max_locations: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-location vectors and mean/std statistics of one feature map [B, C, H, W], each [B, L, C];
    keys with more than ``max_locations`` locations are left out (None keeps all)."""
    fmap = fmap.float()
    B, C, H, W = fmap.shape

    def wanted(locations: int) -> bool:
        return max_locations is None or locations <= max_locations

    out = {}
    if wanted(H * W):
        out[name] = fmap.flatten(2).transpose(1, 2)
    out[f"{name}_mean"] = fmap.mean(dim=(2, 3)).unsqueeze(1)
    out[f"{name}_std"] = _std(fmap, dim=(2, 3)).unsqueeze(1)
    for s in patch_sizes:
        if H % s or W % s or not wanted((H // s) * (W // s)):
            continue  # no whole patches of this size, or too many of them
        cells = fmap.reshape(B, C, H // s, s, W // s, s).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C, s * s)
        out[f"{name}_mean_{s}"] = cells.mean(dim=-1)
        out[f"{name}_std_{s}"] = _std(cells, dim=-1)
    return out


def image_features(
    x: torch.Tensor,
    encoder: ResNetMAE | None = None,
    *,
    patch_sizes: tuple[int, ...] = (2, 4),
    every_k_block: int = 2,
    max_locations: int | None = None,
) -> dict[str, torch.Tensor]:
    """Feature dict of a batch of samples x [B, C, H, W]. Without an encoder only 'global' is returned.
    Encoder keys with more than ``max_locations`` locations are left out (None keeps all).

    Gradients flow through the encoder to x; freeze the encoder's parameters yourself
    (``encoder.requires_grad_(False).eval()``).
    """
    features = {"global": x.float().flatten(1).unsqueeze(1)}
    if encoder is None:
        return features
    folded = fold_patches(x, encoder.input_patch).float()
    features["norm_x"] = (folded.square().mean(dim=(2, 3)) + 1e-6).sqrt().unsqueeze(1)
    out = encoder.encode(x)
    for name, fmap in out.maps.items():
        features.update(map_features(name, fmap, patch_sizes, max_locations))
    if every_k_block > 0:
        for stage, outputs in out.blocks.items():
            for index in range(every_k_block, len(outputs) + 1, every_k_block):
                features.update(map_features(f"{stage}_blk{index}", outputs[index - 1], patch_sizes, max_locations))
    return features
