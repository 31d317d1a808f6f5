"""PushT env wrapper: DP observation shapes, keypoints, exact state restore, reward/termination/truncation."""

import numpy as np
import pytest

from envs.pusht.env import GOAL_POSE, T_BAR, T_STEM, PushTEnv, block_keypoints, block_keypoints_local, keypoint_obs


@pytest.fixture(scope="module")
def env():
    return PushTEnv(obs_type="keypoints")


def test_observation_shapes():
    for obs_type, check in [
        ("keypoints", lambda o: o.shape == (20,)),
        ("state", lambda o: o.shape == (5,) and 0 <= o[4] < 2 * np.pi),
        (
            "image",
            lambda o: o["image"].shape == (3, 96, 96)
            and o["image"].dtype == np.float32
            and 0.0 <= o["image"].min() <= o["image"].max() <= 1.0
            and o["agent_pos"].shape == (2,),
        ),
    ]:
        env = PushTEnv(obs_type=obs_type)
        obs, _ = env.reset(seed=100000)
        assert check(obs), obs_type
        assert env.observation_space.contains(obs) or obs_type == "state", obs_type
        obs, *_ = env.step(np.array([256.0, 256.0]))
        assert check(obs), obs_type
    assert env.render().shape == (256, 256, 3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="obs_type"):
        PushTEnv(obs_type="pixels")
    env = PushTEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(5,\) state"):
        env.set_state(np.zeros(4))
    with pytest.raises(ValueError, match=r"\(2,\) target"):
        env.step(np.zeros(3))


def test_keypoints_are_a_fixed_rigid_function_of_the_pose(env):
    local = block_keypoints_local()
    assert local.shape == (9, 2)
    # DP's definition: farthest points of the drawn T (outline pixels included), so all lie on or next to the T.
    lo = np.minimum(T_BAR.min(0), T_STEM.min(0)) - 3
    hi = np.maximum(T_BAR.max(0), T_STEM.max(0)) + 3
    assert np.all((local > lo) & (local < hi))
    pose = np.array([200.0, 300.0, 1.2])
    np.testing.assert_array_equal(block_keypoints(pose), block_keypoints(pose.copy()))
    other = block_keypoints(np.array([10.0, -5.0, -2.0]))
    dist = lambda k: np.linalg.norm(k[:, None] - k[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(block_keypoints(pose)), dist(other), atol=1e-9)
    obs, _ = env.reset(options={"reset_to_state": np.array([50.0, 60.0, *pose])})
    np.testing.assert_allclose(obs[:18], block_keypoints(pose).reshape(-1), atol=1e-9)
    np.testing.assert_allclose(obs[18:], [50.0, 60.0])
    np.testing.assert_allclose(keypoint_obs(np.array([50.0, 60.0, *pose])), obs)


def test_set_state_restores_exactly_and_replays(env):
    target = np.array([100.0, 200.0, 213.8, 390.3, 1.3])  # a pose gym-pusht's own reset_to_state misplaces
    env.reset(seed=1, options={"reset_to_state": target})
    assert np.abs(env.get_state() - target).max() < 0.1
    env.reset_state = target  # pending state, as a vector env sets it
    env.reset(seed=2)
    assert np.abs(env.get_state() - target).max() < 0.1
    # Record a trajectory, restore a mid-episode state (with the agent's velocity) and replay the same actions.
    env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(150, 350, size=(30, 2))
    states, velocities = [env.get_state()], [env.get_agent_velocity()]
    for action in actions:
        env.step(action)
        states.append(env.get_state())
        velocities.append(env.get_agent_velocity())
    env.reset(seed=4)
    env.set_state(states[10], velocities[10])
    for t in range(10, 30):
        env.step(actions[t])
        assert np.abs(env.get_state()[:4] - states[t + 1][:4]).max() < 0.1
        assert abs(env.get_state()[4] - states[t + 1][4]) < 1e-3


def test_reward_termination_and_truncation(env):
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.array([300.0, 300.0]))
    assert reward == pytest.approx(np.clip(info["coverage"] / 0.95, 0, 1))
    assert not terminated
    env.reset(options={"reset_to_state": np.array([60.0, 60.0, *GOAL_POSE])})
    _, reward, terminated, truncated, info = env.step(np.array([60.0, 60.0]))
    assert info["coverage"] > 0.95 and reward == 1.0 and terminated and not truncated
    env.reset(options={"reset_to_state": np.array([60.0, 60.0, 256.0, 400.0, 0.0])})
    for t in range(300):
        _, _, terminated, truncated, _ = env.step(np.array([60.0, 60.0]))
        assert not terminated
        assert truncated == (t == 299)
