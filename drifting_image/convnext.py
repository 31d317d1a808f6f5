"""ConvNeXt-V2 features, which the released pixel-space generators add to the MAE's (``use_convnext: true``).

The release runs ``facebook/convnextv2-base-22k-224`` (converted to JAX) on the generated and real images and
adds these keys to the drifting loss, each [B, L, C] (names as released, typo included):

- ``convenxt_stage_{1,2,3}``: per-location vectors of stages 2-4, each location normalized over its channels
  ((y - mean) / (std + 1e-3));
- ``convenxt_stage_{0..3}_mean`` and ``_std``: their mean and std over the locations;
- ``global_mean``: the final LayerNorm (epsilon 1e-6, Flax's default) of the last stage's unnormalized mean;
  ``global_std``: the std over locations of the normalized last stage (the same values as ``convenxt_stage_3_std``).

Images go in as the generator makes them, [B, 3, H, W] in [-1, 1]; as in the release they are clipped to [0, 1],
normalized with ImageNet's mean and std and resized to 224x224 (bilinear, antialiased when shrinking, like
``jax.image.resize``). The network is ``transformers``' ``ConvNextV2Model`` read from a local folder
(``save_pretrained`` of the Hugging Face model); nothing is downloaded. Its GRN takes the plain L2 norm where the
release adds 1e-6 under the root, a difference far below float32 resolution for real activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers import ConvNextV2Model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224


def normalize_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W]: each location's channel vector to zero mean and unit (biased) std, plus 1e-3 in the divisor."""
    mean = x.mean(dim=1, keepdim=True)
    std = (x - mean).square().mean(dim=1, keepdim=True).sqrt()
    return (x - mean) / (std + 1e-3)


def spatial_std(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[B, C, H, W] -> [B, 1, C]: std over the locations, with eps under the root (the release's safe_std)."""
    flat = x.flatten(2)
    return ((flat - flat.mean(dim=2, keepdim=True)).square().mean(dim=2) + eps).sqrt().unsqueeze(1)


class ConvNeXtFeatures(nn.Module):
    """The released ConvNeXt-V2 feature keys of a batch of images in [-1, 1] (see the module docstring)."""

    def __init__(self, model: ConvNextV2Model):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_folder(cls, folder: str | Path) -> ConvNeXtFeatures:
        """From a local copy of facebook/convnextv2-base-22k-224 (``ConvNextV2Model`` or the classifier)."""
        from transformers import ConvNextV2Model  # imported here: transformers is slow to import

        return cls(ConvNextV2Model.from_pretrained(str(folder), local_files_only=True))

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images.float() + 1) / 2).clamp(0, 1)
        x = (x - self.mean) / self.std
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = self.model.embeddings(x)
        outputs = []
        for stage in self.model.encoder.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.stage_outputs(images)
        features = {}
        for index, x in enumerate(outputs):
            normed = normalize_channels(x)
            if index > 0:
                features[f"convenxt_stage_{index}"] = normed.flatten(2).transpose(1, 2)
            features[f"convenxt_stage_{index}_mean"] = normed.mean(dim=(2, 3)).unsqueeze(1)
            features[f"convenxt_stage_{index}_std"] = spatial_std(normed)
        last = outputs[-1]
        norm = self.model.layernorm
        features["global_mean"] = F.layer_norm(last.mean(dim=(2, 3)), norm.normalized_shape, norm.weight, norm.bias,
                                               eps=1e-6).unsqueeze(1)
        features["global_std"] = spatial_std(normalize_channels(last))
        return features
