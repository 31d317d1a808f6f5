import json

import h5py
import numpy as np
import pytest

from drifting_policy.data import (
    RobomimicReader,
    axis_angle_action_to_rot6d,
    rot6d_action_to_axis_angle,
    write_robomimic_hdf5,
)
from drifting_policy.data.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix

ENV_ARGS = {"env_name": "Lift", "type": 1,
            "env_kwargs": {"control_freq": 20, "controller_configs": {"type": "OSC_POSE"}}}


def make_demo(rng, length, action_dim=7):
    obs = {"object": rng.normal(size=(length, 10)).astype(np.float32),
           "robot0_eef_pos": rng.normal(size=(length, 3)),
           "agentview_image": rng.integers(0, 256, size=(length, 8, 8, 3), dtype=np.uint8)}
    actions = rng.uniform(-1, 1, size=(length, action_dim))
    return {"obs": obs, "next_obs": {k: np.roll(v, -1, axis=0) for k, v in obs.items()},
            "actions": actions, "states": rng.normal(size=(length, 32)), "rewards": np.zeros(length),
            "dones": (np.arange(length) == length - 1).astype(np.int64), "attrs": {"model_file": "<mujoco/>"}}


@pytest.fixture
def demos():
    rng = np.random.default_rng(0)
    return [make_demo(rng, length) for length in (5, 3, 4, 6, 2, 3, 4, 5, 3, 2, 4, 7)]


def test_round_trip_and_layout(tmp_path, demos):
    masks = {"train": [f"demo_{i}" for i in range(10)], "valid": ["demo_11", "demo_10"]}
    path = write_robomimic_hdf5(tmp_path / "low_dim.hdf5", demos, ENV_ARGS, masks=masks)
    assert [p.name for p in tmp_path.iterdir()] == ["low_dim.hdf5"]
    with h5py.File(path, "r") as f:  # robomimic's layout, read without our reader
        assert f["data"].attrs["total"] == sum(len(d["actions"]) for d in demos)
        assert json.loads(f["data"].attrs["env_args"]) == ENV_ARGS
        assert f["data/demo_3"].attrs["num_samples"] == 6
        assert f["mask/valid"].dtype.kind == "S" and list(f["mask/valid"][:]) == [b"demo_11", b"demo_10"]
        assert f["data/demo_0/obs/agentview_image"].dtype == np.uint8

    reader = RobomimicReader(path)
    assert reader.env_meta == ENV_ARGS and reader.filter_keys == ["train", "valid"]
    assert reader.demo_names() == [f"demo_{i}" for i in range(12)]  # numeric order: demo_10 after demo_9
    assert reader.demo_names("valid") == ["demo_10", "demo_11"]
    for i, demo in enumerate(demos):
        back = reader.get_demo(f"demo_{i}")
        assert back["attrs"]["model_file"] == "<mujoco/>" and back["attrs"]["num_samples"] == len(demo["actions"])
        for field in ("actions", "states", "rewards", "dones"):
            assert back[field].dtype == demo[field].dtype
            np.testing.assert_array_equal(back[field], demo[field])
        for group in ("obs", "next_obs"):
            assert back[group].keys() == demo[group].keys()
            for key, value in demo[group].items():
                np.testing.assert_array_equal(back[group][key], value)


def test_to_replay_buffer(tmp_path, demos):
    path = write_robomimic_hdf5(tmp_path / "d.hdf5", demos, ENV_ARGS, masks={"train": ["demo_2", "demo_0"]})
    reader = RobomimicReader(path)
    buffer = reader.to_replay_buffer(["object", "robot0_eef_pos", "agentview_image"], filter_key="train")
    np.testing.assert_array_equal(buffer.episode_ends, [5, 9])
    assert buffer["robot0_eef_pos"].dtype == np.float32 and buffer["agentview_image"].dtype == np.uint8
    np.testing.assert_array_equal(buffer.get_episode(1)["action"], demos[2]["actions"].astype(np.float32))

    absolute = reader.to_replay_buffer(["object"], abs_action=True)
    assert absolute["action"].shape == (sum(len(d["actions"]) for d in demos), 10)
    np.testing.assert_allclose(rot6d_action_to_axis_angle(absolute.get_episode(0)["action"]),
                               demos[0]["actions"], atol=1e-5)


def test_reader_and_writer_errors(tmp_path, demos):
    path = write_robomimic_hdf5(tmp_path / "d.hdf5", demos[:2], ENV_ARGS)
    reader = RobomimicReader(path)
    with pytest.raises(ValueError, match=r"d\.hdf5: data/demo_0 lacks obs keys \['robot0_eef_quat'\]; "
                                         r"obs keys present: \['agentview_image', 'object', 'robot0_eef_pos'\]"):
        reader.to_replay_buffer(["object", "robot0_eef_quat"])
    with pytest.raises(ValueError, match=r"no filter key 'train'; filter keys: \[\]"):
        reader.demo_names("train")
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        RobomimicReader(tmp_path / "missing.hdf5")
    bad = dict(demos[0], rewards=np.zeros(2))
    with pytest.raises(ValueError, match=r"demo 1: 'rewards' has 2 steps, 'actions' has 5"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", [demos[1], bad], ENV_ARGS)
    with pytest.raises(ValueError, match=r"mask 'valid' names demos \['demo_7'\]"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", demos[:2], ENV_ARGS, masks={"valid": ["demo_7"]})
    with pytest.raises(ValueError, match=r"env_args needs keys env_name, type, env_kwargs; missing \['type'\]"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", demos[:2], {"env_name": "Lift", "env_kwargs": {}})
    assert not (tmp_path / "bad.hdf5").exists()


def test_rotation_6d_is_first_two_rows():
    theta = 0.3
    c, s = np.cos(theta), np.sin(theta)
    matrix = axis_angle_to_matrix(np.array([0.0, 0.0, theta]))
    np.testing.assert_allclose(matrix, [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(matrix_to_rotation_6d(matrix), [c, -s, 0, s, c, 0], atol=1e-12)
    noisy = matrix_to_rotation_6d(matrix) * 1.7 + np.array([0.01, 0, 0, 0, 0.02, 0])
    back = rotation_6d_to_matrix(noisy)
    np.testing.assert_allclose(back @ back.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(back), 1.0)


@pytest.mark.parametrize("arms", [1, 2])
def test_absolute_action_round_trip(arms):
    rng = np.random.default_rng(arms)
    raw = rng.uniform(-1, 1, size=(64, 4, 7 * arms))
    for arm in range(arms):  # rotation vectors with angle below pi are recovered exactly
        axis = rng.normal(size=(64, 4, 3))
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        raw[..., 7 * arm + 3:7 * arm + 6] = axis * rng.uniform(0, np.pi - 1e-3, size=(64, 4, 1))
    converted = axis_angle_action_to_rot6d(raw)
    assert converted.shape == (64, 4, 10 * arms)
    for arm in range(arms):
        np.testing.assert_array_equal(converted[..., 10 * arm:10 * arm + 3], raw[..., 7 * arm:7 * arm + 3])
        np.testing.assert_array_equal(converted[..., 10 * arm + 9], raw[..., 7 * arm + 6])
        rot6d = converted[..., 10 * arm + 3:10 * arm + 9]
        axis_angle = raw[..., 7 * arm + 3:7 * arm + 6]
        np.testing.assert_allclose(rot6d, matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle)))
    np.testing.assert_allclose(rot6d_action_to_axis_angle(converted), raw, atol=1e-9)
    with pytest.raises(ValueError, match="7 values per arm; got last dimension 8"):
        axis_angle_action_to_rot6d(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="10 values per arm; got last dimension 7"):
        rot6d_action_to_axis_angle(np.zeros((2, 7)))
