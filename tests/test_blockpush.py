"""BlockPush: reward and phase arithmetic, observation layout, state round trips, determinism, data files."""

import math

import numpy as np
import pytest

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.blockpush.env import (
    ENTER_REWARD,
    OBS_DIM,
    OBS_SLICES,
    SUCCESS_REWARD,
    BlockPushMultimodalEnv,
    phase_metrics,
    step_reward,
)
from envs.blockpush.generate import generate, run_oracle_episode
from envs.blockpush.oracle import PLANS, MultimodalPushOracle
from envs.blockpush.runner import summarize, train_initial_states

ZONES = np.array([[0.28, 0.2], [0.52, 0.2]])


@pytest.fixture(scope="module")
def env():
    env = BlockPushMultimodalEnv()
    yield env
    env.close()


def scene(env, block, block2, effector=(0.3, -0.4)):
    """A state vector with the blocks at the given (x, y), zones at ZONES, the effector far below."""
    state = env.get_state()
    state[0:2], state[2] = block, 0.0
    state[3:5], state[5] = block2, 0.0
    state[6:8], state[8] = ZONES[0], math.pi
    state[9:11], state[11] = ZONES[1], math.pi
    state[12:14] = effector
    return state


# ------------------------------------------------------------------ reward arithmetic
def test_step_reward_enter_then_success():
    entered = np.zeros((2, 2), dtype=bool)
    far = np.array([[0.4, -0.3], [0.5, -0.3]])
    assert step_reward(far, ZONES, entered) == (0.0, -1)
    one_in = np.array([ZONES[1] + 0.01, [0.5, -0.3]])
    assert step_reward(one_in, ZONES, entered) == (ENTER_REWARD, -1)
    assert step_reward(one_in, ZONES, entered) == (0.0, -1)  # only the first entry pays
    both_in = np.array([ZONES[1] + 0.01, ZONES[0] - 0.01])
    assert step_reward(both_in, ZONES, entered) == (SUCCESS_REWARD, 1)  # block -> target2: crossed


def test_step_reward_same_zone_never_succeeds():
    entered = np.zeros((2, 2), dtype=bool)
    same = np.array([ZONES[0] + [0.025, 0.0], ZONES[0] - [0.025, 0.0]])
    assert step_reward(same, ZONES, entered)[0] == pytest.approx(2 * ENTER_REWARD)
    assert step_reward(same, ZONES, entered) == (0.0, -1)


def test_phase_metrics_follow_dp_unique_sum():
    assert phase_metrics([0.0] * 10) == {"score": 0.0, "p1": False, "p2": False}
    one = phase_metrics([0.0, ENTER_REWARD, 0.0, 0.0])
    assert one["p1"] and not one["p2"] and one["score"] == pytest.approx(0.49)
    both = phase_metrics([0.0, ENTER_REWARD, 0.0, ENTER_REWARD, SUCCESS_REWARD])
    assert both["p1"] and both["p2"] and both["score"] == pytest.approx(1.0)


# ------------------------------------------------------------------ env scenarios
def test_teleport_blocks_into_different_zones(env):
    env.reset(seed=0)
    rewards = []
    env.set_state(scene(env, ZONES[0], (0.55, -0.3)))
    _, reward, terminated, _, info = env.step(np.zeros(2))
    rewards.append(reward)
    assert reward == pytest.approx(ENTER_REWARD) and not terminated
    assert info["first_block"] == 0 and info["assignment"] == -1
    _, reward, terminated, _, _ = env.step(np.zeros(2))
    rewards.append(reward)
    assert reward == 0.0 and not terminated
    env.set_state(scene(env, ZONES[0], ZONES[1]))
    _, reward, terminated, _, info = env.step(np.zeros(2))
    rewards.append(reward)
    assert reward == pytest.approx(SUCCESS_REWARD) and terminated
    assert info["assignment"] == 0
    assert info["block_entered_step"].tolist() == [[1, -1], [-1, 3]]
    metrics = phase_metrics(rewards)
    assert metrics["p1"] and metrics["p2"]
    assert (info["score"], info["p1"], info["p2"]) == (metrics["score"], True, True)


def test_teleport_both_blocks_into_one_zone(env):
    env.reset(seed=0)
    rewards = []
    env.set_state(scene(env, ZONES[1] + [0.025, 0.0], (0.3, -0.2)))
    for _ in range(2):
        rewards.append(env.step(np.zeros(2))[1])
    env.set_state(scene(env, ZONES[1] + [0.025, 0.0], ZONES[1] - [0.025, 0.0]))
    for _ in range(3):
        _, reward, terminated, _, info = env.step(np.zeros(2))
        rewards.append(reward)
        assert not terminated
    assert rewards == pytest.approx([ENTER_REWARD, 0.0, ENTER_REWARD, 0.0, 0.0])
    assert info["assignment"] == -1
    metrics = phase_metrics(rewards)
    assert metrics["p1"] and not metrics["p2"]
    assert info["p1"] and not info["p2"]


def test_observation_layout_matches_state(env):
    state = scene(env, (0.35, -0.25), (0.5, -0.1), effector=(0.25, -0.35))
    state[2], state[5] = 0.3, -0.4  # yaws; the observation reports them modulo pi
    obs, _ = env.reset(options={"state": state})
    assert obs.shape == (OBS_DIM,) == (16,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[OBS_SLICES["block_translation"]], state[0:2], atol=2e-3)
    np.testing.assert_allclose(obs[OBS_SLICES["block_orientation"]], 0.3, atol=2e-3)
    np.testing.assert_allclose(obs[OBS_SLICES["block2_translation"]], state[3:5], atol=2e-3)
    np.testing.assert_allclose(obs[OBS_SLICES["block2_orientation"]], math.pi - 0.4, atol=2e-3)
    np.testing.assert_allclose(obs[OBS_SLICES["effector_target_translation"]], state[12:14], atol=1e-6)
    np.testing.assert_allclose(obs[OBS_SLICES["effector_translation"]], state[12:14], atol=5e-3)
    np.testing.assert_allclose(obs[OBS_SLICES["target_translation"]], ZONES[0], atol=1e-6)
    np.testing.assert_allclose(obs[OBS_SLICES["target2_translation"]], ZONES[1], atol=1e-6)
    np.testing.assert_allclose(obs[[12, 15]], 0.0, atol=1e-5)  # zone yaw pi, reported modulo pi
    assert [s.start for s in OBS_SLICES.values()] == [0, 2, 3, 5, 6, 8, 10, 12, 13, 15]


def test_actions_move_the_effector_target(env):
    obs, _ = env.reset(seed=3)
    start = obs[OBS_SLICES["effector_target_translation"]].copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([0.02, 0.5]))  # y is clipped to the 0.1 m action bound
    np.testing.assert_allclose(obs[OBS_SLICES["effector_target_translation"]], start + [0.1, 0.5], atol=1e-6)
    for _ in range(5):
        obs, *_ = env.step(np.array([0.0, 0.1]))  # the workspace ends at y = 0.5
    assert obs[OBS_SLICES["effector_target_translation"]][1] == pytest.approx(0.5)


def test_initial_state_distribution(env):
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        blocks = np.stack([obs[OBS_SLICES["block_translation"]], obs[OBS_SLICES["block2_translation"]]])
        zones = np.stack([obs[OBS_SLICES["target_translation"]], obs[OBS_SLICES["target2_translation"]]])
        assert np.all(np.abs(blocks[:, 0] - 0.4) <= 0.1 + 1e-3) and np.all(np.abs(blocks[:, 1] + 0.2) <= 0.15 + 1e-3)
        assert abs(blocks[0, 0] - blocks[1, 0]) > 0.1 - 1e-3
        np.testing.assert_allclose(np.sort(zones[:, 0]), [0.28, 0.52], atol=0.006)
        np.testing.assert_allclose(zones[:, 1], 0.2, atol=0.008)
        np.testing.assert_allclose(obs[OBS_SLICES["effector_translation"]], [0.3, -0.4], atol=5e-3)


def test_episode_truncates_at_max_steps():
    env = BlockPushMultimodalEnv(max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2))[2:4] for _ in range(3)]
    env.close()
    assert flags == [(False, False), (False, False), (False, True)]


def test_bad_inputs_raise(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="shape \\(14,\\)"):
        env.set_state(np.zeros(5))
    with pytest.raises(RuntimeError, match="reset"):
        MultimodalPushOracle()(np.zeros(OBS_DIM))


def test_reset_is_deterministic_and_history_free(env):
    actions = np.random.default_rng(0).uniform(-0.03, 0.03, size=(15, 2))

    def rollout(e, seed):
        trace = [e.reset(seed=seed)[0]]
        trace += [e.step(a)[0] for a in actions]
        return np.stack(trace)

    first = rollout(env, 5)
    rollout(env, 6)
    fresh = BlockPushMultimodalEnv()
    try:
        np.testing.assert_array_equal(rollout(env, 5), first)
        np.testing.assert_array_equal(rollout(fresh, 5), first)
    finally:
        fresh.close()


def test_state_round_trip(env):
    env.reset(seed=2)
    for _ in range(5):
        env.step(np.array([0.02, 0.02]))
    state = env.get_state()
    env.reset(seed=7)
    env.set_state(state)
    np.testing.assert_allclose(env.get_state(), state, atol=1e-9)


def test_reset_state_attribute_and_train_states(env):
    states = train_initial_states(n_train=2, start_seed=0)
    seeded, _ = env.reset(seed=0)
    env.reset_state = states[0]
    try:
        from_state, _ = env.reset(seed=123)  # the pending state wins over the seed
    finally:
        env.reset_state = None
    np.testing.assert_allclose(from_state, seeded, atol=2e-3)
    assert not np.allclose(states[0], states[1])


def test_summarize_episode_infos(env):
    env.reset(seed=0)
    idle_info = env.step(np.zeros(2))[-1]
    env.set_state(scene(env, ZONES[1], ZONES[0]))  # crossed assignment, both at once
    crossed_info = env.step(np.zeros(2))[-1]
    log = summarize(["test", "test", "train"], [idle_info, crossed_info, crossed_info])
    assert log["test/p1"] == 0.5 and log["test/p2"] == 0.0  # DP's quirk: a direct 0.51 sums to 0.51 only
    assert log["test/mean_score"] == pytest.approx(SUCCESS_REWARD / 2)
    assert log["test/assignment_1"] == 0.5 and log["test/assignment_0"] == 0.0
    assert log["test/TARGET_0_1"] == 0.5 and log["test/TARGET_0_0"] == 0.0
    assert log["train/p1"] == 1.0 and log["train/assignment_entropy"] == 0.0
    with pytest.raises(ValueError, match="prefixes"):
        summarize(["test"], [])


# ------------------------------------------------------------------ oracle and data
def test_oracle_plans_are_uniform():
    oracle = MultimodalPushOracle()
    rng = np.random.default_rng(0)
    counts = np.zeros(len(PLANS))
    for _ in range(2000):
        oracle.reset(rng)
        counts[oracle.plan_index] += 1
        (first_block, first_zone), (second_block, second_zone) = oracle.plan
        assert {first_block, second_block} == {0, 1} and {first_zone, second_zone} == {0, 1}
    np.testing.assert_allclose(counts / counts.sum(), 0.25, atol=0.03)


def test_generation_zarr_round_trip(tmp_path):
    buffer, attempts = generate(2, seed=0)
    path = buffer.save_to_path(tmp_path / "blockpush.zarr.zip")
    loaded = ReplayBuffer.copy_from_path(path)
    assert sorted(loaded.keys()) == ["action", "obs"]
    assert loaded.n_episodes == 2 and attempts == 2  # the oracle solves seeds 0 and 1
    assert loaded["obs"].shape == (loaded.n_steps, 16) and loaded["action"].shape == (loaded.n_steps, 2)
    np.testing.assert_array_equal(loaded["obs"], buffer["obs"])
    np.testing.assert_array_equal(loaded["action"], buffer["action"])
    np.testing.assert_array_equal(loaded.episode_ends, buffer.episode_ends)
    # Consecutive effector targets differ by the recorded action (the env's own bookkeeping).
    episode = loaded.get_episode(0)
    targets = episode["obs"][:, OBS_SLICES["effector_target_translation"]]
    np.testing.assert_allclose(np.diff(targets, axis=0), episode["action"][:-1], atol=1e-5)
    env, oracle = BlockPushMultimodalEnv(), MultimodalPushOracle()
    again = run_oracle_episode(env, oracle, seed=0, attempt=0)
    env.close()
    np.testing.assert_array_equal(again["obs"], episode["obs"])
    np.testing.assert_array_equal(again["action"], episode["action"])


@pytest.mark.slow
def test_oracle_reaches_p2():
    env = BlockPushMultimodalEnv()
    oracle = MultimodalPushOracle()
    successes = [phase_metrics(run_oracle_episode(env, oracle, 100000, i)["rewards"])["p2"] for i in range(20)]
    env.close()
    assert np.mean(successes) >= 0.9


class OraclePolicy:
    """The scripted oracle behind DP's policy interface, one oracle per vector-env member."""

    def __init__(self, n_envs):
        self.oracles = [MultimodalPushOracle() for _ in range(n_envs)]

    def reset(self):
        for i, oracle in enumerate(self.oracles):
            oracle.reset(np.random.default_rng(i))

    def predict_action(self, obs_dict):
        latest = obs_dict["obs"][:, -1].numpy()
        actions = np.stack([oracle(obs) for oracle, obs in zip(self.oracles, latest, strict=True)])
        return {"action": actions[:, None, :]}


def test_vector_env_runner_with_oracle_policy():
    from envs.blockpush.runner import make_env, summarize
    from envs.common.runner import VectorEnvRunner, dp_episodes

    episodes = dp_episodes(n_test=1, n_test_vis=0)
    runner = VectorEnvRunner(make_env, episodes, n_obs_steps=3, n_action_steps=1, vectorization="sync",
                             show_progress=False)
    try:
        log = runner.run(OraclePolicy(len(episodes)))
    finally:
        runner.close()
    assert log["test/mean_score"] == pytest.approx(SUCCESS_REWARD)  # the generic runner scores max reward

    # With the task's summary, the score is DP's summed distinct rewards and the phases are logged.
    runner = VectorEnvRunner(make_env, episodes, n_obs_steps=3, n_action_steps=1, vectorization="sync",
                             show_progress=False, summarize=summarize)
    try:
        log = runner.run(OraclePolicy(len(episodes)))
    finally:
        runner.close()
    assert log["test/mean_score"] == pytest.approx(1.0)
    assert log["test/p1"] == 1.0 and log["test/p2"] == 1.0
    assert log["test/assignment_0"] + log["test/assignment_1"] == 1.0
