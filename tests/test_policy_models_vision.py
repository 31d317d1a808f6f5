"""Image observation encoder: ResNet-18 (GroupNorm) trunk, spatial softmax, crops, multi-camera dicts."""

import math

import pytest
import torch
import torch.nn as nn

from drifting_policy.models import count_parameters
from drifting_policy.models.vision import (
    ImageCrop,
    MultiImageObsEncoder,
    RgbEncoder,
    SpatialSoftmax,
    resnet18_groupnorm,
)

PUSHT_META = {
    "obs": {"image": {"shape": [3, 96, 96], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}
ROBOMIMIC_META = {
    "obs": {
        "agentview_image": {"shape": [3, 84, 84], "type": "rgb"},
        "robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
        "robot0_eef_pos": {"shape": [3]},
        "robot0_eef_quat": {"shape": [4]},
        "robot0_gripper_qpos": {"shape": [2]},
    },
    "action": {"shape": [10]},
}


def random_obs(shape_meta, n):
    return {key: torch.rand(n, *attr["shape"]) for key, attr in shape_meta["obs"].items()}


def position_image(n, height, width):
    """Images whose channel 0 holds the row index and channel 1 the column index of each pixel."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack([rows, cols, rows + cols]).expand(n, 3, height, width).clone()


@pytest.mark.parametrize("size", [96, 84, 76])
def test_resnet_trunk_downsamples_by_32(size):
    trunk = resnet18_groupnorm()
    assert trunk(torch.randn(2, 3, size, size)).shape == (2, 512, math.ceil(size / 32), math.ceil(size / 32))


def test_resnet_trunk_has_resnet18_size_and_groupnorm_only():
    trunk = resnet18_groupnorm()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the classifier we drop.
    assert count_parameters(trunk) == 11_689_512 - 513_000
    norms = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels // m.num_groups == 16 for m in norms)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trunk.modules())
    assert resnet18_groupnorm(in_channels=1)(torch.randn(1, 1, 64, 64)).shape == (1, 512, 2, 2)


def test_spatial_softmax_finds_a_sharp_peak():
    pool = SpatialSoftmax((1, 5, 9), num_kp=1, temperature=0.01)
    with torch.no_grad():
        pool.keypoint_maps.weight.fill_(1.0)
        pool.keypoint_maps.bias.zero_()
    features = torch.zeros(1, 1, 5, 9)
    features[0, 0, 1, 6] = 1.0  # row 1 of 5 -> y = -0.5, column 6 of 9 -> x = 0.5
    assert torch.allclose(pool(features), torch.tensor([[0.5, -0.5]]), atol=1e-4)


def test_spatial_softmax_shape_range_and_temperature():
    pool = SpatialSoftmax((512, 3, 3), num_kp=32)
    keypoints = pool(torch.randn(4, 512, 3, 3))
    assert keypoints.shape == (4, 64) and keypoints.abs().max() <= 1.0
    assert "temperature" not in dict(pool.named_parameters())
    learnable = SpatialSoftmax((512, 3, 3), num_kp=32, learnable_temperature=True)
    assert dict(learnable.named_parameters())["temperature"].requires_grad
    with pytest.raises(ValueError, match=r"expects \(B, 512, 3, 3\)"):
        pool(torch.randn(4, 512, 4, 4))


def test_crop_is_centred_and_deterministic_in_eval():
    crop = ImageCrop(84, 84).eval()
    images = position_image(5, 96, 96)
    out = crop(images)
    assert out.shape == (5, 3, 84, 84)
    assert torch.equal(out, images[:, :, 6:90, 6:90])
    assert torch.equal(ImageCrop(76, 76).eval()(position_image(1, 84, 84)), position_image(1, 84, 84)[:, :, 4:80, 4:80])


def test_crop_is_a_random_window_per_image_in_training():
    torch.manual_seed(0)
    crop = ImageCrop(84, 84).train()
    images = position_image(64, 96, 96)
    out = crop(images)
    assert out.shape == (64, 3, 84, 84)
    tops, lefts = out[:, 0, 0, 0].long(), out[:, 1, 0, 0].long()
    for i in range(64):  # each output is exactly the window at its own offset
        top, left = tops[i].item(), lefts[i].item()
        assert torch.equal(out[i], images[i, :, top : top + 84, left : left + 84])
    assert tops.min() >= 0 and tops.max() <= 12 and lefts.min() >= 0 and lefts.max() <= 12
    assert len(set(zip(tops.tolist(), lefts.tolist(), strict=True))) > 32  # offsets differ between images
    with pytest.raises(ValueError, match="cannot crop 84x84"):
        crop(torch.rand(1, 3, 80, 96))


def test_rgb_encoder_train_is_random_and_eval_is_deterministic():
    torch.manual_seed(0)
    encoder = RgbEncoder((3, 96, 96), crop_shape=(84, 84))
    images = torch.rand(2, 3, 96, 96)
    assert encoder(images).shape == (2, 64)
    assert not torch.allclose(encoder(images), encoder(images))
    encoder.eval()
    assert torch.equal(encoder(images), encoder(images))
    with pytest.raises(ValueError, match=r"expects images \(N, 3, 96, 96\)"):
        encoder(torch.rand(2, 3, 84, 84))
    with pytest.raises(ValueError, match="larger than the image"):
        RgbEncoder((3, 84, 84), crop_shape=(96, 96))


def test_pusht_image_encoder_output():
    encoder = MultiImageObsEncoder(PUSHT_META, crop_shape=(84, 84))
    assert encoder.out_dim == 64 + 2
    obs = random_obs(PUSHT_META, 6)
    out = encoder(obs)
    assert out.shape == (6, 66)
    assert torch.equal(out[:, 64:], obs["agent_pos"])


def test_two_cameras_and_low_dim_keys_in_sorted_order():
    encoder = MultiImageObsEncoder(ROBOMIMIC_META, crop_shape=(76, 76)).eval()
    assert encoder.rgb_keys == ["agentview_image", "robot0_eye_in_hand_image"]
    assert encoder.out_dim == 2 * 64 + 3 + 4 + 2
    obs = random_obs(ROBOMIMIC_META, 4)
    out = encoder(obs)
    assert out.shape == (4, 137)
    assert torch.equal(out[:, :64], encoder.rgb_encoders["agentview_image"](obs["agentview_image"]))
    low_dim = torch.cat([obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"]], dim=-1)
    assert torch.equal(out[:, 128:], low_dim)


def test_shared_rgb_model_matches_encoding_each_camera():
    encoder = MultiImageObsEncoder(ROBOMIMIC_META, crop_shape=(76, 76), share_rgb_model=True).eval()
    separate = MultiImageObsEncoder(ROBOMIMIC_META, crop_shape=(76, 76)).eval()
    assert count_parameters(encoder) < count_parameters(separate)
    obs = random_obs(ROBOMIMIC_META, 3)
    out = encoder(obs)
    cameras = ["agentview_image", "robot0_eye_in_hand_image"]
    expected = torch.cat([encoder.rgb_encoder(obs[key]) for key in cameras], dim=-1)
    assert torch.allclose(out[:, :128], expected, atol=1e-5)
    assert out.shape == (3, encoder.out_dim)


def test_obs_encoder_errors_name_the_key():
    encoder = MultiImageObsEncoder(PUSHT_META)
    obs = random_obs(PUSHT_META, 2)
    with pytest.raises(KeyError, match="'agent_pos' of shape \\(2, 2\\) is missing"):
        encoder({"image": obs["image"]})
    with pytest.raises(ValueError, match=r"'image' must be \(2, 3, 96, 96\), got \(2, 3, 84, 84\)"):
        encoder({"image": torch.rand(2, 3, 84, 84), "agent_pos": obs["agent_pos"]})
    with pytest.raises(ValueError, match="'depth' has type 'depth'"):
        MultiImageObsEncoder({"obs": {"depth": {"shape": [1, 8, 8], "type": "depth"}}})
    with pytest.raises(ValueError, match="rgb key 'image' needs a \\(C, H, W\\) shape"):
        MultiImageObsEncoder({"obs": {"image": {"shape": [96, 96], "type": "rgb"}}})
    mixed = {"obs": {"a": {"shape": [3, 84, 84], "type": "rgb"}, "b": {"shape": [3, 96, 96], "type": "rgb"}}}
    with pytest.raises(ValueError, match="share_rgb_model needs one image shape"):
        MultiImageObsEncoder(mixed, share_rgb_model=True)


def test_obs_encoder_has_no_batchnorm_and_trains_end_to_end():
    encoder = MultiImageObsEncoder(PUSHT_META, crop_shape=(84, 84))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules())
    encoder(random_obs(PUSHT_META, 2)).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
