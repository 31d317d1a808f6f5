import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from drifting_policy.normalizer import (
    LinearNormalizer,
    SingleFieldLinearNormalizer,
    get_abs_action_normalizer_from_stat,
    get_image_range_normalizer,
)


def fitted_normalizer():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-3, 7, size=(500, 5)).astype(np.float32)
    obs[:, 2] = 4.0  # a constant dimension
    action = rng.normal(size=(500, 2)) * [10, 0.1]
    normalizer = LinearNormalizer()
    normalizer.fit({"obs": obs, "action": action})
    return normalizer, obs, action


def test_limits_map_data_range_to_minus_one_one():
    normalizer, obs, action = fitted_normalizer()
    y = normalizer.normalize({"obs": obs, "action": action})
    assert y["obs"].dtype == torch.float32 and y["obs"].shape == (500, 5)
    varying = [0, 1, 3, 4]
    torch.testing.assert_close(y["obs"][:, varying].min(0).values, -torch.ones(4))
    torch.testing.assert_close(y["obs"][:, varying].max(0).values, torch.ones(4))
    torch.testing.assert_close(y["obs"][:, 2], torch.zeros(500))  # constant dim lands mid-range
    torch.testing.assert_close(y["action"].abs().max(0).values, torch.ones(2))
    back = normalizer.unnormalize(y)
    torch.testing.assert_close(back["obs"], torch.from_numpy(obs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back["action"], torch.from_numpy(action).float(), atol=1e-5, rtol=1e-5)


def test_sequences_and_multi_dim_features():
    normalizer, obs, _ = fitted_normalizer()
    batch = torch.from_numpy(obs[:48]).reshape(4, 12, 5)  # (B, T, D)
    torch.testing.assert_close(normalizer["obs"].normalize(batch).reshape(48, 5), normalizer["obs"].normalize(obs[:48]))
    keypoints = torch.rand(100, 10, 9, 2)
    field = SingleFieldLinearNormalizer.create_fit(keypoints, last_n_dims=2)
    assert field.scale.shape == (18,)
    y = field.normalize(keypoints)
    assert y.shape == keypoints.shape
    torch.testing.assert_close(y.amin(dim=(0, 1)), -torch.ones(9, 2))
    with pytest.raises(ValueError, match=r"cannot normalize shape \(4, 7\)"):
        field.normalize(torch.zeros(4, 7))


def test_gaussian_and_zero_centred_modes():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(4000, 3))
    y = SingleFieldLinearNormalizer.create_fit(x, mode="gaussian").normalize(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=1e-4, rtol=0)
    z = SingleFieldLinearNormalizer.create_fit(x - 3.0, fit_offset=False).normalize(x - 3.0)
    assert torch.isclose(z.abs().max(), torch.tensor(1.0)) and torch.all(z.abs().amax(0) <= 1 + 1e-6)


def test_single_field_access_and_stats():
    normalizer, obs, _ = fitted_normalizer()
    field = normalizer["obs"]
    assert isinstance(field, SingleFieldLinearNormalizer)
    torch.testing.assert_close(field.normalize(obs), normalizer.normalize({"obs": obs})["obs"])
    stats = normalizer.get_input_stats()
    assert set(stats) == {"obs", "action"} and set(stats["obs"]) == {"min", "max", "mean", "std"}
    torch.testing.assert_close(stats["obs"]["max"], torch.from_numpy(obs.max(0)))
    only = LinearNormalizer()
    only.fit(obs)
    torch.testing.assert_close(only.get_input_stats()["min"], torch.from_numpy(obs.min(0)))
    torch.testing.assert_close(only.normalize(obs), field.normalize(obs))
    with pytest.raises(KeyError, match=r"no field 'image'; fields: \['obs', 'action'\]"):
        normalizer["image"]
    with pytest.raises(RuntimeError, match="not fitted"):
        SingleFieldLinearNormalizer().normalize(obs)


def test_image_range_normalizer_maps_unit_range_to_minus_one_one():
    image = torch.rand(2, 3, 3, 8, 8)
    y = get_image_range_normalizer().normalize(image)
    torch.testing.assert_close(y, image * 2 - 1)
    torch.testing.assert_close(get_image_range_normalizer().normalize(torch.tensor([0.0, 1.0])),
                               torch.tensor([-1.0, 1.0]))


def test_abs_action_normalizer_scales_positions_only():
    rng = np.random.default_rng(2)
    actions = rng.uniform(-0.5, 0.8, size=(300, 20)).astype(np.float32)
    stat = {"min": actions.min(0), "max": actions.max(0), "mean": actions.mean(0), "std": actions.std(0)}
    y = get_abs_action_normalizer_from_stat(stat).normalize(actions)
    for arm in (0, 10):
        torch.testing.assert_close(y[:, arm:arm + 3].amin(0), -torch.ones(3))
        torch.testing.assert_close(y[:, arm:arm + 3].amax(0), torch.ones(3))
        torch.testing.assert_close(y[:, arm + 3:arm + 10], torch.from_numpy(actions[:, arm + 3:arm + 10]))
    with pytest.raises(ValueError, match="10-D per arm"):
        get_abs_action_normalizer_from_stat({k: v[:7] for k, v in stat.items()})


class TinyPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2)
        self.normalizer = LinearNormalizer()


def test_state_dict_round_trip_into_fresh_modules(tmp_path):
    normalizer, obs, action = fitted_normalizer()
    normalizer["image"] = get_image_range_normalizer()
    state = normalizer.state_dict()
    assert {"params_dict.obs.scale", "params_dict.obs.offset", "params_dict.obs.input_stats.min",
            "params_dict.image.input_stats.std"} <= set(state)

    fresh = LinearNormalizer()
    fresh.load_state_dict(state)
    assert fresh.keys() == ["obs", "action", "image"]
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])
    torch.testing.assert_close(fresh.normalize({"obs": obs})["obs"], normalizer.normalize({"obs": obs})["obs"])

    policy = TinyPolicy()
    policy.normalizer = normalizer
    save_file(policy.state_dict(), tmp_path / "model.safetensors")
    restored = TinyPolicy()
    restored.load_state_dict(load_file(tmp_path / "model.safetensors"))
    torch.testing.assert_close(restored.normalizer["action"].unnormalize(torch.zeros(2)),
                               normalizer["action"].unnormalize(torch.zeros(2)))
    assert sorted(restored.normalizer.keys()) == ["action", "image", "obs"]
    assert not any(p is restored.normalizer.params_dict["obs"].scale for p in restored.parameters())

    with pytest.raises(RuntimeError, match="Unexpected key"):
        LinearNormalizer().load_state_dict({**state, "stray": torch.zeros(1)})
