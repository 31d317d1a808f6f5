"""Image observation encoder of Diffusion Policy's image policies (robomimic's VisualCore), on torch.nn only.

Per camera: crop (random in training, centre at evaluation) -> ResNet-18 trunk with GroupNorm, trained
from scratch -> spatial softmax keypoints -> linear to a small feature vector. MultiImageObsEncoder
concatenates those features with the flat low-dimensional observations.

Images enter as they leave the policy's normalizer (DP maps [0, 1] to [-1, 1] there); no rescaling
happens here, so the same normalizer statistics serve both code bases.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn as nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm in place of BatchNorm, 16 channels per group, as in DP's image policies."""
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a residual; the first may halve the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), group_norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.relu(h + self.shortcut(x))


def resnet18_groupnorm(in_channels: int = 3) -> nn.Sequential:
    """ResNet-18 without its pooling and classifier: (B, in_channels, H, W) -> (B, 512, ceil(H/32), ceil(W/32))."""
    layers = [
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        group_norm(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    channels = 64
    for out_channels, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(channels, out_channels, stride), BasicBlock(out_channels, out_channels)]
        channels = out_channels
    trunk = nn.Sequential(*layers)
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return trunk


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map: a 1x1 conv gives `num_kp` maps, a softmax over locations turns each
    into a distribution, and its expected (x, y) in [-1, 1] is the keypoint.

    in_shape: (C, H, W) of the feature map. Output (B, 2 * num_kp) ordered x0, y0, x1, y1, ...
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_kp: int = 32,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
    ):
        super().__init__()
        channels, height, width = in_shape
        self.in_shape = (channels, height, width)
        self.keypoint_maps = nn.Conv2d(channels, num_kp, kernel_size=1)
        temperature = torch.tensor([float(temperature)])
        if learnable_temperature:
            self.temperature = nn.Parameter(temperature)
        else:
            self.register_buffer("temperature", temperature)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if tuple(features.shape[1:]) != self.in_shape:
            expected = ", ".join(map(str, self.in_shape))
            raise ValueError(f"SpatialSoftmax expects (B, {expected}), got {tuple(features.shape)}")
        logits = self.keypoint_maps(features).flatten(2)  # (B, K, H*W)
        attention = torch.softmax(logits / self.temperature, dim=-1)
        keypoints = attention @ self.grid  # (B, K, 2): expected x, y
        return keypoints.flatten(1)


class ImageCrop(nn.Module):
    """Crop (N, C, H, W) images to (height, width): an independent uniformly random window per image in
    training, the centre window at evaluation (rounded as torchvision's center_crop)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        if h < self.height or w < self.width:
            raise ValueError(
                f"ImageCrop: cannot crop {self.height}x{self.width} from images of shape {tuple(images.shape)}"
            )
        if not self.training:
            top, left = round((h - self.height) / 2), round((w - self.width) / 2)
            return images[:, :, top : top + self.height, left : left + self.width]
        top = torch.randint(0, h - self.height + 1, (n, 1, 1), device=images.device)
        left = torch.randint(0, w - self.width + 1, (n, 1, 1), device=images.device)
        rows = top + torch.arange(self.height, device=images.device)[:, None]  # (N, height, 1)
        cols = left + torch.arange(self.width, device=images.device)[None, :]  # (N, 1, width)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # Advanced indexing around the channel slice puts the indexed dims first: (N, height, width, C).
        return images[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


class RgbEncoder(nn.Module):
    """One camera: (N, C, H, W) -> (N, feature_dim). Crop -> ResNet-18 (GroupNorm) -> SpatialSoftmax -> Linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        crop_shape: Sequence[int] | None = None,
        feature_dim: int = 64,
        num_kp: int = 32,
    ):
        super().__init__()
        channels, height, width = input_shape
        self.input_shape = (channels, height, width)
        self.crop = nn.Identity()
        if crop_shape is not None:
            if crop_shape[0] > height or crop_shape[1] > width:
                raise ValueError(f"RgbEncoder: crop {tuple(crop_shape)} is larger than the image {self.input_shape}")
            self.crop = ImageCrop(*crop_shape)
            height, width = crop_shape
        self.trunk = resnet18_groupnorm(channels)
        self.pool = SpatialSoftmax((512, math.ceil(height / 32), math.ceil(width / 32)), num_kp)
        self.proj = nn.Linear(2 * num_kp, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"RgbEncoder expects images (N, {expected}), got {tuple(images.shape)}")
        return self.proj(self.pool(self.trunk(self.crop(images))))


class MultiImageObsEncoder(nn.Module):
    """Encodes a DP observation dict, one time step per row, into a flat feature vector.

    shape_meta: DP's format, e.g. {'obs': {'image': {'shape': [3, 96, 96], 'type': 'rgb'},
        'agent_pos': {'shape': [2], 'type': 'low_dim'}}, 'action': {'shape': [2]}}; 'type' defaults to low_dim.
    crop_shape: (h, w) crop for every camera, or None for no crop.
    share_rgb_model: one RgbEncoder for all cameras (they must then share a shape) instead of one each.

    forward(obs): obs[key] is (N, *shape) for every key of shape_meta['obs'] (N = B * To; other keys are
    ignored). Output (N, out_dim): the cameras' features in sorted key order, then the flattened low-dim
    observations in sorted key order (DP's order).
    """

    def __init__(
        self,
        shape_meta: dict,
        crop_shape: Sequence[int] | None = None,
        feature_dim: int = 64,
        num_kp: int = 32,
        share_rgb_model: bool = False,
    ):
        super().__init__()
        if "obs" not in shape_meta or not shape_meta["obs"]:
            raise ValueError("MultiImageObsEncoder: shape_meta needs a non-empty 'obs' entry")
        self.key_shapes = {}
        rgb_keys, low_dim_keys = [], []
        for key, attr in shape_meta["obs"].items():
            if "shape" not in attr:
                raise ValueError(f"MultiImageObsEncoder: shape_meta['obs']['{key}'] has no 'shape'")
            shape = tuple(int(s) for s in attr["shape"])
            kind = attr.get("type", "low_dim")
            if kind == "rgb":
                if len(shape) != 3:
                    raise ValueError(f"MultiImageObsEncoder: rgb key '{key}' needs a (C, H, W) shape, got {shape}")
                rgb_keys.append(key)
            elif kind == "low_dim":
                low_dim_keys.append(key)
            else:
                raise ValueError(f"MultiImageObsEncoder: key '{key}' has type '{kind}', expected 'rgb' or 'low_dim'")
            self.key_shapes[key] = shape
        self.rgb_keys, self.low_dim_keys = sorted(rgb_keys), sorted(low_dim_keys)

        def rgb_encoder(key):
            return RgbEncoder(self.key_shapes[key], crop_shape, feature_dim, num_kp)

        self.share_rgb_model = share_rgb_model
        if share_rgb_model and self.rgb_keys:
            camera_shapes = {self.key_shapes[key] for key in self.rgb_keys}
            if len(camera_shapes) > 1:
                raise ValueError(f"MultiImageObsEncoder: share_rgb_model needs one image shape, got {camera_shapes}")
            self.rgb_encoder = rgb_encoder(self.rgb_keys[0])
        else:
            self.rgb_encoders = nn.ModuleDict({key: rgb_encoder(key) for key in self.rgb_keys})
        self.out_dim = len(self.rgb_keys) * feature_dim + sum(math.prod(self.key_shapes[k]) for k in self.low_dim_keys)

    def _checked(self, obs: dict, key: str, batch: int) -> torch.Tensor:
        expected = (batch, *self.key_shapes[key])
        if key not in obs:
            raise KeyError(f"MultiImageObsEncoder: observation '{key}' of shape {expected} is missing")
        value = obs[key]
        if tuple(value.shape) != expected:
            raise ValueError(f"MultiImageObsEncoder: observation '{key}' must be {expected}, got {tuple(value.shape)}")
        return value

    def forward(self, obs: dict) -> torch.Tensor:
        first_key = (self.rgb_keys + self.low_dim_keys)[0]
        if first_key not in obs:
            raise KeyError(f"MultiImageObsEncoder: observation '{first_key}' is missing")
        batch = obs[first_key].shape[0]
        images = [self._checked(obs, key, batch) for key in self.rgb_keys]
        features = []
        if self.share_rgb_model and images:
            # One pass over all cameras, then back to (N, cameras * feature_dim) in key order.
            shared = self.rgb_encoder(torch.cat(images, dim=0))
            features.append(shared.reshape(len(images), batch, -1).transpose(0, 1).reshape(batch, -1))
        else:
            features += [self.rgb_encoders[key](image) for key, image in zip(self.rgb_keys, images, strict=True)]
        features += [self._checked(obs, key, batch).reshape(batch, -1) for key in self.low_dim_keys]
        return torch.cat(features, dim=-1)
