"""MultiStepWrapper and VectorEnvRunner on a tiny env whose rewards are known in advance."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.common.multistep import MultiStepWrapper
from envs.common.runner import Episode, VectorEnvRunner, dp_episodes


def known_rewards(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=4 + seed % 5)


class ScriptedRewardEnv(gym.Env):
    """obs = [t, 10 t] (or a dict); reward at step t = rewards[t]; terminates after the last reward. The rewards are
    ``known_rewards(seed)`` unless a ``reset_state`` (a reward sequence) is pending."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    render_mode = "rgb_array"

    def __init__(self, dict_obs: bool = False):
        self.dict_obs = dict_obs
        box = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.observation_space = gym.spaces.Dict({"a": box, "b": box}) if dict_obs else box
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.reset_state = None

    def _obs(self):
        obs = np.array([self.t, 10.0 * self.t])
        return {"a": obs, "b": -obs} if self.dict_obs else obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.reset_state is not None:
            self.rewards = np.asarray(self.reset_state)
        else:  # an unseeded reset (a vector env's auto-reset) replays seed 0
            self.rewards = known_rewards(0 if seed is None else seed)
        self.reset_state, self.t = None, 0
        return self._obs(), {}

    def step(self, action):
        reward = float(self.rewards[self.t])
        self.t += 1
        return self._obs(), reward, self.t == len(self.rewards), False, {}

    def render(self):
        return np.full((16, 16, 3), 20 * self.t, dtype=np.uint8)


def test_multistep_stacks_and_keeps_max_reward():
    env = MultiStepWrapper(ScriptedRewardEnv(), n_obs_steps=3, n_action_steps=2)
    env.unwrapped.reset_state = [0.2, 0.9, 0.1, 0.3, 0.5]
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[:, 0], [0, 0, 0])  # the reset observation, repeated
    assert env.observation_space.shape == (3, 2)
    obs, reward, terminated, _, _ = env.step(np.zeros((2, 1)))
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])
    assert reward == 0.9 and not terminated
    obs, reward, terminated, _, _ = env.step(np.zeros((2, 1)))
    np.testing.assert_array_equal(obs[:, 0], [2, 3, 4])
    assert reward == 0.9 and not terminated  # max so far, not the last reward
    obs, reward, terminated, _, info = env.step(np.zeros((2, 1)))  # only one step left: stops early
    np.testing.assert_array_equal(obs[:, 0], [3, 4, 5])
    assert terminated and env.unwrapped.t == 5 and info["max_reward"] == 0.9
    again = env.step(np.zeros((2, 1)))  # finished: the env is left alone
    assert env.unwrapped.t == 5 and again[2] and again[1] == 0.9
    with pytest.raises(ValueError, match=r"expected actions of shape \(k, 1\)"):
        MultiStepWrapper(ScriptedRewardEnv(), 2, 2).step(np.zeros(2))


def test_multistep_dict_observations():
    env = MultiStepWrapper(ScriptedRewardEnv(dict_obs=True), n_obs_steps=2, n_action_steps=1)
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"a", "b"} and obs["a"].shape == (2, 2)
    obs, *_ = env.step(np.zeros((1, 1)))
    np.testing.assert_array_equal(obs["b"][:, 1], [0, -10])
    assert env.observation_space["a"].shape == (2, 2)


class ZeroPolicy:
    """Records what it is given; returns zero actions (B, Ta, 1) as a tensor."""

    def __init__(self, n_action_steps: int):
        self.n_action_steps, self.seen, self.resets = n_action_steps, [], 0

    def reset(self):
        self.resets += 1

    def predict_action(self, obs_dict):
        self.seen.append({k: tuple(v.shape) for k, v in obs_dict.items()})
        batch = next(iter(obs_dict.values())).shape[0]
        return {"action": torch.zeros(batch, self.n_action_steps, 1)}


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_runner_scores_are_mean_max_rewards(vectorization, tmp_path):
    train_rewards = [np.array([0.1, 0.7, 0.2]), np.array([0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.45])]
    episodes = dp_episodes(train_rewards, n_test=5, test_start_seed=11, n_train_vis=1, n_test_vis=1)
    runner = VectorEnvRunner(
        ScriptedRewardEnv, episodes, n_obs_steps=2, n_action_steps=3, n_envs=3,
        vectorization=vectorization, output_dir=tmp_path, video_format="gif", show_progress=False,
    )
    policy = ZeroPolicy(n_action_steps=4)  # more actions than executed: the runner keeps the first Ta
    try:
        log = runner.run(policy)
    finally:
        runner.close()
    test_max = [known_rewards(seed).max() for seed in range(11, 16)]
    for seed, expected in zip(range(11, 16), test_max, strict=True):
        assert log[f"test/sim_max_reward_{seed}"] == pytest.approx(expected)
    assert log["test/mean_score"] == pytest.approx(np.mean(test_max))
    assert log["train/sim_max_reward_0"] == pytest.approx(0.7)
    assert log["train/sim_max_reward_1"] == pytest.approx(0.45)
    assert log["train/mean_score"] == pytest.approx(np.mean([0.7, 0.45]))
    assert policy.resets == 3  # 7 episodes in chunks of 3
    assert all(shapes == {"obs": (3, 2, 2)} for shapes in policy.seen)
    assert {k for k in log if "video" in k} == {"train/sim_video_0", "test/sim_video_11"}
    for key in ("train/sim_video_0", "test/sim_video_11"):
        assert (tmp_path / "media").exists() and log[key].endswith(".gif")
        assert __import__("pathlib").Path(log[key]).stat().st_size > 0


def test_runner_dict_observations_and_mp4(tmp_path):
    runner = VectorEnvRunner(
        lambda: ScriptedRewardEnv(dict_obs=True), [Episode("test", 2, video=True)], n_obs_steps=2, n_action_steps=2,
        vectorization="sync", obs_keys=["b"], output_dir=tmp_path, show_progress=False,
    )
    policy = ZeroPolicy(n_action_steps=2)
    log = runner.run(policy)
    assert policy.seen[0] == {"b": (1, 2, 2)}
    assert log["test/mean_score"] == pytest.approx(known_rewards(2).max())
    assert log["test/sim_video_2"].endswith(".mp4") and (tmp_path / "media" / "test_2.mp4").stat().st_size > 0
    runner.obs_keys = ["missing"]
    with pytest.raises(KeyError, match="missing"):
        runner.run(policy)
