"""PushT expert, demonstration generator, shipped dataset, runner with the expert as a policy, task configs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.pusht.env import PushTEnv, block_keypoints
from envs.pusht.expert import PushTExpert
from envs.pusht.generate import generate, run_expert_episode
from envs.pusht.runner import PushTRunner, dataset_initial_states
from envs.pusht.stats import multimodality

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "envs/pusht/data/pusht_expert_lowdim.zarr.zip"


def test_expert_solves_test_seeds():
    env, expert = PushTEnv(obs_type="state"), PushTExpert()
    for seed in (100000, 100001):
        episode = run_expert_episode(env, expert, seed)
        assert episode.success and episode.max_coverage > 0.95 and episode.length < 300


def test_expert_randomness_gives_different_demonstrations():
    env = PushTEnv(obs_type="state")
    actions = []
    for expert_seed in range(4):
        env.reset(seed=123)
        expert = PushTExpert(seed=expert_seed)
        state, trajectory = env.get_state(), []
        for _ in range(40):
            action = expert.act(state)
            trajectory.append(action)
            state = env.step(action)[4]["state"]
        actions.append(np.array(trajectory))
    assert any(not np.allclose(actions[0], other) for other in actions[1:])


def test_multimodality_measure():
    states = np.tile(np.array([[100.0, 100.0, 250.0, 250.0, 0.5]]), (4, 1))
    ends = np.array([2, 4])
    opposite = states[:, :2] + np.array([[10.0, 0.0], [10.0, 0.0], [-10.0, 0.0], [-10.0, 0.0]])
    share, pairs = multimodality(states, opposite, ends)
    assert pairs == 4 and share == 1.0  # only pairs across episodes count
    share, _ = multimodality(states, states[:, :2] + 10.0, ends)
    assert share == 0.0


def test_generator_is_deterministic_and_round_trips(tmp_path):
    first, summary = generate(2, seed=5, show_progress=False)
    second, _ = generate(2, seed=5, show_progress=False)
    assert summary["episodes"] == 2 and first.n_episodes == 2
    np.testing.assert_array_equal(first.episode_ends, second.episode_ends)
    for key in ("state", "keypoint", "action", "n_contacts"):
        np.testing.assert_array_equal(first[key], second[key])
    n = first.n_steps
    assert first["state"].shape == (n, 5) and first["keypoint"].shape == (n, 9, 2)
    assert first["action"].shape == (n, 2) and first["n_contacts"].shape == (n, 1)
    np.testing.assert_allclose(first["keypoint"][7], block_keypoints(first["state"][7, 2:5].astype(np.float64)),
                               atol=1e-3)
    for name in ("demo.zarr.zip", "demo.zarr"):
        loaded = ReplayBuffer.copy_from_path(first.save_to_path(tmp_path / name))
        np.testing.assert_array_equal(loaded.episode_ends, first.episode_ends)
        for key in first.keys():  # noqa: SIM118  (a ReplayBuffer is not iterable)
            np.testing.assert_array_equal(loaded[key], first[key])


def test_perturbed_episode_records_the_experts_own_actions():
    env = PushTEnv(obs_type="state")
    clean = run_expert_episode(env, PushTExpert(), 1_000_005, record=True)
    shoved = run_expert_episode(env, PushTExpert(), 1_000_005, record=True, perturb=40.0)
    assert shoved.success
    n = min(clean.length, shoved.length)
    assert not np.allclose(clean.data["state"][:n], shoved.data["state"][:n])  # the shoves changed the path
    # Fed the recorded states in order, a fresh expert gives exactly the recorded actions: they are its own, not
    # the shoved targets the env executed.
    expert = PushTExpert()
    expert.reset(1_000_005)
    states = shoved.data["state"].astype(np.float64)
    # The recorded angle is wrapped to [0, 2pi); the expert reads angles modulo 2pi.
    actions = np.stack([expert.act(state) for state in states])
    np.testing.assert_allclose(actions, shoved.data["action"], atol=1e-3)
    # ... and those actions alone do not replay the episode.
    env.reset(seed=0, options={"reset_to_state": states[0]})
    replayed = [env.step(action)[4]["state"] for action in shoved.data["action"].astype(np.float64)]
    assert np.abs(np.array(replayed)[:-1, :2] - states[1:, :2]).max() > 5.0


def test_generated_images_are_renders_of_the_states():
    buffer, _ = generate(1, seed=3, images=True, show_progress=False)
    assert buffer["img"].shape == (buffer.n_steps, 96, 96, 3) and buffer["img"].dtype == np.uint8
    env = PushTEnv(obs_type="image")
    env.reset(seed=0)
    for t in (0, buffer.n_steps // 2):
        env.set_state(buffer["state"][t].astype(np.float64))
        # The stored state is float32: an edge pixel may round the other way, nothing more.
        differs = np.abs(env.render_image().astype(int) - buffer["img"][t]).max(axis=-1) > 1
        assert differs.mean() < 0.005


def test_clean_episode_replays_from_its_actions():
    """Without shoves, states and actions line up: an episode starts at rest, so its actions replay it."""
    episode = generate(1, seed=0, show_progress=False)[0].get_episode(0)
    env = PushTEnv(obs_type="state")
    # A fixed seed: the first step after a restore still depends on simulator state left by the underlying random
    # reset (about 1 seed in 10 changes the block's first move by up to ~1 px; the cause is not found yet).
    env.reset(seed=0, options={"reset_to_state": episode["state"][0].astype(np.float64)})
    for t, action in enumerate(episode["action"]):
        _, _, terminated, _, info = env.step(action.astype(np.float64))
        if t + 1 < len(episode["action"]):
            np.testing.assert_allclose(info["state"][:4], episode["state"][t + 1, :4], atol=0.01)
    assert terminated and info["coverage"] > 0.95


def test_shipped_dataset_is_the_perturbed_generator_output():
    """The generator keeps successful episodes only; shoves mean recorded actions do not replay an episode."""
    buffer = ReplayBuffer.copy_from_path(SHIPPED)
    assert buffer.n_episodes >= 200 and set(buffer.keys()) == {"state", "keypoint", "action", "n_contacts"}
    assert SHIPPED.stat().st_size < 5_000_000
    # The shipped file is the generator's seed-0 output with --perturb 40 (README's command).
    regenerated, _ = generate(2, seed=0, perturb=40.0, show_progress=False)
    for key in regenerated.keys():  # noqa: SIM118  (a ReplayBuffer is not iterable)
        np.testing.assert_array_equal(regenerated[key], buffer[key][: regenerated.n_steps])
    states = dataset_initial_states(SHIPPED, 3)
    np.testing.assert_array_equal(states[1], buffer["state"][buffer.episode_ends[0]])


class ExpertPolicy:
    """The scripted expert behind the policy interface (low-dim 'state' observations, one action per call)."""

    def __init__(self):
        self.experts = []

    def reset(self):
        self.experts = []

    def predict_action(self, obs_dict):
        states = obs_dict["obs"][:, -1].double().numpy()
        if not self.experts:
            self.experts = [PushTExpert(seed=i) for i in range(len(states))]
        actions = np.stack([expert.act(state) for expert, state in zip(self.experts, states, strict=True)])
        return {"action": torch.from_numpy(actions)[:, None]}


def test_pusht_runner_with_the_expert_as_policy():
    runner = PushTRunner(
        dataset_path=SHIPPED, obs_type="state", n_train=1, n_test=2, n_obs_steps=1, n_action_steps=1,
        vectorization="sync", show_progress=False,
    )
    log = runner.run(ExpertPolicy())
    runner.close()
    assert log["test/mean_score"] == 1.0 and log["train/mean_score"] == 1.0
    assert set(log) == {"train/sim_max_reward_0", "test/sim_max_reward_100000", "test/sim_max_reward_100001",
                        "train/mean_score", "test/mean_score"}


@pytest.mark.parametrize("name", ["pusht_lowdim", "pusht_image"])
def test_task_configs(name):
    from hydra.utils import instantiate

    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", eval)
    cfg = OmegaConf.create({"task": OmegaConf.load(ROOT / f"configs/task/{name}.yaml")})
    assert (cfg.task.horizon, cfg.task.n_obs_steps, cfg.task.n_action_steps) == (16, 2, 8)
    assert cfg.task.dataset.pad_before == 1 and cfg.task.dataset.pad_after == 7
    runner_cfg = OmegaConf.to_container(cfg.task.env_runner, resolve=True)
    assert runner_cfg["_target_"] == "envs.pusht.runner.PushTRunner" and runner_cfg["test_start_seed"] == 100000
    if name == "pusht_lowdim":
        dataset = instantiate(cfg.task.dataset)
        item = dataset[0]
        assert tuple(item["obs"].shape) == (16, 20) and tuple(item["action"].shape) == (16, 2)
        runner = instantiate(cfg.task.env_runner, n_test=1, n_train=1, vectorization="sync")
        assert [(e.prefix, e.seed) for e in runner.episodes] == [("train", 0), ("test", 100000)]
        runner.close()


@pytest.mark.slow
def test_expert_success_rate_on_all_test_seeds():
    from envs.pusht.stats import evaluate_expert

    result = evaluate_expert(range(100000, 100050))
    assert result["success_rate"] >= 0.95 and result["mean_length"] < 200
