"""ResNet-style masked autoencoder, the feature encoder of the drifting loss (paper A.3).

The encoder is a ResNet-34 layout of "basic" blocks with GroupNorm: a 3x3 stem without downsampling, then four
stages of [3, 4, 6, 3] blocks at widths C, 2C, 4C, 8C; the first block of stages 2-4 halves the resolution, so
a 32x32 input gives maps of 32, 16, 8 and 4. Each stage ends with a GroupNorm, whose output feeds the next
stage. A U-Net decoder (bilinear upsampling, skip concatenation, GN, two 3x3 conv-GN-ReLU) reconstructs the
input. Pixel images are first folded into 8x8 patches (256x256x3 -> 32x32x192, channels in the released
order), so the ResNet always runs at 32x32. Training zeroes random 2x2 patches of that 32x32 grid and regresses
the masked values.

Tensors are channels-first [B, C, H, W].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides the channels, and Flax's epsilon 1e-6
    (the released MAEs were trained with it; torch's default 1e-5 changes every feature of a small input)."""
    groups = min(max_groups, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-GN layers with a residual connection (1x1 conv-GN projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.norm1 = group_norm(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), group_norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(self.shortcut(x) + y)


@dataclass
class EncoderOutput:
    """Multi-scale maps of the encoder: ``maps`` holds 'conv1' (stem) and 'layer1'..'layer4' (stage outputs
    after their GroupNorm); ``blocks`` holds, per stage name, the output of each of its residual blocks."""

    maps: dict[str, torch.Tensor]
    blocks: dict[str, list[torch.Tensor]]


class ResNetEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int, layers: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, width), group_norm(width), nn.ReLU())
        self.stages = nn.ModuleList()
        self.stage_norms = nn.ModuleList()
        channels = width
        for index, num_blocks in enumerate(layers):
            out_channels = width * 2**index
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
            self.stages.append(nn.ModuleList(blocks))
            self.stage_norms.append(group_norm(out_channels))
            channels = out_channels
        self.widths = [width] + [width * 2**i for i in range(len(layers))]

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        x = self.stem(x)
        maps, blocks = {"conv1": x}, {}
        for index, (stage, norm) in enumerate(zip(self.stages, self.stage_norms, strict=True), start=1):
            outputs = []
            for block in stage:
                x = block(x)
                outputs.append(x)
            x = norm(x)
            maps[f"layer{index}"], blocks[f"layer{index}"] = x, outputs
        return EncoderOutput(maps, blocks)


class ConvGNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(conv3x3(in_channels, out_channels), group_norm(out_channels), nn.ReLU())


class UpBlock(nn.Module):
    """Bilinear upsampling to the skip's resolution, concatenation with the skip, GN, two conv-GN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.norm = group_norm(in_channels + skip_channels)
        self.convs = nn.Sequential(ConvGNReLU(in_channels + skip_channels, out_channels),
                                   ConvGNReLU(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(self.norm(torch.cat([x, skip], dim=1)))


class UNetDecoder(nn.Module):
    """layer4 -> bridge conv -> up to layer3, layer2, layer1, stem (the last at equal resolution) -> 1x1 conv."""

    def __init__(self, widths: list[int], out_channels: int):
        super().__init__()
        stem, c1, c2, c3, c4 = widths
        self.bridge = ConvGNReLU(c4, c4)
        self.ups = nn.ModuleList([UpBlock(c4, c3, c3), UpBlock(c3, c2, c2), UpBlock(c2, c1, c1), UpBlock(c1, stem, c1)])
        self.head = nn.Conv2d(c1, out_channels, 1)

    def forward(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.bridge(maps["layer4"])
        for up, skip in zip(self.ups, ("layer3", "layer2", "layer1", "conv1"), strict=True):
            x = up(x, maps[skip])
        return self.head(x)


def fold_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, p*p*C, H/p, W/p]: each p x p patch becomes one location's channels, in the released
    order (row in the patch, column in the patch, channel), channel fastest: index (i*p + j)*C + c."""
    if p == 1:
        return x
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 3, 5, 1, 2, 4).reshape(B, p * p * C, H // p, W // p)


def unfold_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`fold_patches`."""
    if p == 1:
        return x
    B, folded, h, w = x.shape
    C = folded // (p * p)
    return x.reshape(B, p, p, C, h, w).permute(0, 3, 4, 1, 5, 2).reshape(B, C, h * p, w * p)


def random_patch_mask(
    batch: int, height: int, width: int, *, patch: int = 2, ratio: float = 0.5,
    generator: torch.Generator | None = None, device=None,
) -> torch.Tensor:
    """[batch, 1, height, width] mask, 1 = masked: each patch x patch cell is masked independently with
    probability ``ratio``. Drawn on the CPU (with ``generator``, a CPU generator) and moved to ``device``."""
    if height % patch or width % patch:
        raise ValueError(f"mask patch {patch} does not divide the {height}x{width} grid")
    cells = torch.rand(batch, 1, height // patch, width // patch, generator=generator) < ratio
    return cells.float().repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3).to(device)


class ResNetMAE(nn.Module):
    """Masked autoencoder with a ResNet encoder and a U-Net decoder, plus a linear classifier on the pooled
    last stage (used by the classification fine-tune).

    in_channels: channels of the image/latent; input_patch: side of the patches folded into channels before
    the ResNet (1 for 32x32 latents, 8 for 256x256 pixels); width: base width C.
    """

    def __init__(
        self,
        in_channels: int = 4,
        width: int = 256,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        input_patch: int = 1,
        mask_patch: int = 2,
        mask_ratio: float = 0.5,
        num_classes: int = 1000,
    ):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"the encoder has 4 stages; got layers={layers}")
        self.in_channels, self.input_patch = in_channels, input_patch
        self.mask_patch, self.mask_ratio = mask_patch, mask_ratio
        folded = in_channels * input_patch**2
        self.encoder = ResNetEncoder(folded, width, tuple(layers))
        self.decoder = UNetDecoder(self.encoder.widths, folded)
        self.classifier = nn.Linear(self.encoder.widths[-1], num_classes)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """Multi-scale encoder maps of an (unmasked) image batch [B, in_channels, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MAE input must be [B, {self.in_channels}, H, W]; got {tuple(x.shape)}")
        return self.encoder(fold_patches(x, self.input_patch))

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, *, lambda_cls: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample loss (1 - lambda_cls) * masked reconstruction L2 + lambda_cls * cross-entropy, and metrics."""
        target = fold_patches(x, self.input_patch)
        B, _, H, W = target.shape
        mask = random_patch_mask(B, H, W, patch=self.mask_patch, ratio=self.mask_ratio,
                                 generator=generator, device=x.device)
        out = self.encoder(target * (1 - mask))
        reconstruction = self.decoder(out.maps)
        # Squared error summed over channels, averaged over masked locations (as the released code).
        squared = (reconstruction.float() - target.float()).square().sum(dim=1, keepdim=True)
        recon_loss = (squared * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
        metrics = {"recon_loss": recon_loss.detach(), "mask_ratio": mask.mean(dim=(1, 2, 3))}
        loss = recon_loss
        if lambda_cls > 0:
            if labels is None:
                raise ValueError("lambda_cls > 0 needs class labels")
            logits = self.classifier(out.maps["layer4"].mean(dim=(2, 3))).float()
            cls_loss = F.cross_entropy(logits, labels, reduction="none")
            loss = lambda_cls * cls_loss + (1 - lambda_cls) * recon_loss
            metrics.update(cls_loss=cls_loss.detach(), accuracy=(logits.argmax(1) == labels).float())
        return loss, metrics

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction [B, in_channels, H, W] of x with the given mask [B, 1, H/p, W/p] (1 = zeroed)."""
        target = fold_patches(x, self.input_patch)
        return unfold_patches(self.decoder(self.encoder(target * (1 - mask)).maps), self.input_patch)


def classification_weight(step: int, *, finetune_start: int, warmup: int = 1000, final: float = 0.1) -> float:
    """lambda of the classification fine-tune: 0 before ``finetune_start``, then a linear ramp to ``final`` over
    ``warmup`` steps, then constant (paper A.3: 3k fine-tune steps, ramp over the first 1k)."""
    if step < finetune_start:
        return 0.0
    return final * min(1.0, (step - finetune_start) / max(1, warmup))


@dataclass(frozen=True)
class MAESize:
    in_channels: int
    width: int
    input_patch: int


# Paper Table 8: width 256 (ablation) and 640 (final) latent MAEs, 640 pixel MAE; "tiny" is ours for CPU/MNIST.
MAE_SIZES: dict[str, MAESize] = {
    "latent-256": MAESize(4, 256, 1),
    "latent-640": MAESize(4, 640, 1),
    "pixel-640": MAESize(3, 640, 8),
    "tiny": MAESize(1, 16, 1),
}


def build_mae(size: str, **overrides) -> ResNetMAE:
    if size not in MAE_SIZES:
        raise ValueError(f"unknown MAE size {size!r}; choose from {sorted(MAE_SIZES)}")
    return ResNetMAE(**{**vars(MAE_SIZES[size]), **overrides})
