"""Franka Kitchen wrapper, scripted expert, data conversion and runner hooks (fast; full expert episodes
on many seeds are marked slow)."""

import numpy as np
import pytest

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.kitchen.env import ACTION_SCALE, N_QPOS, SUBTASKS, KitchenEnv, completed_in_state, phase_fractions
from envs.kitchen.expert import ORDER_CONSTRAINTS, KitchenExpert, parse_subtasks, run_episode, sample_subtasks
from envs.kitchen.generate import bet_arrays_to_replay_buffer, generate, main
from envs.kitchen.runner import distinct_orders, summarize

EARLIER_FOUR = ("microwave", "kettle", "light switch", "slide cabinet")  # the earlier expert's subtask set


@pytest.fixture(scope="module")
def env():
    env = KitchenEnv()
    yield env
    env.close()


def test_full_observation_layout(env):
    obs, info = env.reset(seed=3)
    assert obs.shape == (59,) and env.observation_space.shape == (59,)
    assert info == {"completed_subtasks": [], "n_completed": 0}
    qpos, qvel = env.data.qpos, env.data.qvel
    np.testing.assert_allclose(obs[:9], qpos[:9], atol=0.02)  # robot joints, with sensor noise
    np.testing.assert_allclose(obs[9:18], qvel[:9], atol=0.1)
    np.testing.assert_allclose(obs[18:39], qpos[9:30], atol=1e-3)  # objects (small noise)
    np.testing.assert_allclose(obs[39:59], qvel[9:29], atol=1e-2)


def test_dp60_observation_layout():
    env = KitchenEnv(obs_layout="dp60")
    obs, _ = env.reset(seed=3)
    assert obs.shape == (60,)
    np.testing.assert_allclose(obs[:9], env.data.qpos[:9], atol=0.02)
    np.testing.assert_allclose(obs[9:30], env.data.qpos[9:30], atol=1e-3)
    goal = obs[30:]
    np.testing.assert_allclose(goal[22], -0.75)  # microwave
    np.testing.assert_allclose(goal[23:26], [-0.23, 0.75, 1.62])  # kettle position
    assert np.all(goal[:11] == 0)
    env.close()
    with pytest.raises(ValueError, match="obs_layout"):
        KitchenEnv(obs_layout="pixels")


def test_action_is_an_offset_from_the_observed_joints(env):
    obs, _ = env.reset(seed=0)
    action = np.linspace(-0.5, 0.5, 9)
    env.step(action)
    bounds = env._kitchen.robot_env.robot_pos_bound[:9]
    expected = np.clip(obs[:9] + ACTION_SCALE * action, bounds[:, 0], bounds[:, 1])
    np.testing.assert_allclose(env.data.ctrl[:9], expected, atol=1e-12)
    with pytest.raises(ValueError, match="action of shape"):
        env.step(np.zeros(7))


def test_reset_is_seeded_and_perturbed(env):
    env.reset(seed=5)
    first = env.get_state()
    env.reset(seed=5)
    np.testing.assert_array_equal(env.get_state(), first)
    env.reset(seed=6)
    other = env.get_state()
    assert np.abs(other[:7] - first[:7]).max() > 1e-3  # arm start differs
    assert np.abs(other[23:25] - first[23:25]).max() > 1e-4  # kettle start differs
    assert completed_in_state(first[:N_QPOS]) == [] and completed_in_state(other[:N_QPOS]) == []


def test_state_round_trip_and_reset_state(env):
    env.reset(seed=1)
    for _ in range(3):
        env.step(np.full(9, 0.3))
    state = env.get_state()
    env.reset(seed=2)
    env.set_state(state)
    np.testing.assert_array_equal(env.get_state(), state)
    env.reset(options={"state": state})
    np.testing.assert_array_equal(env.get_state(), state)
    env.reset_state = state
    env.reset(seed=9)
    env.reset_state = None
    np.testing.assert_array_equal(env.get_state(), state)
    with pytest.raises(ValueError, match="qpos 30"):
        env.set_state(state[:30])


def test_subtask_completion_is_counted_in_order_and_kept(env):
    env.reset(seed=0)
    state = env.get_state()
    state[22] = -0.75  # microwave open
    env.set_state(state)
    _, reward, terminated, _, info = env.step(np.zeros(9))
    assert info["completed_subtasks"] == ["microwave"] and reward == pytest.approx(1 / 7)
    state = env.get_state()
    state[19] = 0.37  # slide cabinet open
    state[22] = 0.0  # microwave closed again: stays counted
    env.set_state(state)
    _, reward, terminated, _, info = env.step(np.zeros(9))
    assert info["completed_subtasks"] == ["microwave", "slide cabinet"]
    assert info["n_completed"] == 2 and reward == pytest.approx(2 / 7) and not terminated


def test_all_subtasks_complete_terminates(env):
    env.reset(seed=0)
    state = env.get_state()
    state[[11, 12, 15, 16, 17, 18, 19, 20, 21, 22]] = [-0.88, -0.01, -0.92, -0.01, -0.69, -0.05, 0.37, 0.0, 1.45, -0.75]
    state[23:30] = [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]
    env.set_state(state)
    _, reward, terminated, _, info = env.step(np.zeros(9))
    assert sorted(info["completed_subtasks"]) == sorted(SUBTASKS)
    assert terminated and reward == 1.0


def test_phase_fractions_and_runner_summary():
    assert phase_fractions(np.array([0, 1, 4, 2]), 4) == {1: 0.75, 2: 0.5, 3: 0.25, 4: 0.25}
    infos = [{"completed_subtasks": ["kettle", "microwave"]}, {"completed_subtasks": []},
             {"completed_subtasks": ["microwave"]}]
    log = summarize(["test", "test", "train"], infos)
    assert log["test/p_1"] == 0.5 and log["test/p_2"] == 0.5 and log["test/p_3"] == 0.0
    assert log["test/mean_score"] == pytest.approx(1 / 7)
    assert log["train/p_1"] == 1.0 and log["train/first_microwave"] == 1.0
    assert log["test/orders"] == ["kettle>microwave", ""] and log["test/first_kettle"] == 0.5
    assert log["test/n_orders"] == 1 and log["train/n_orders"] == 0  # one subtask is not an order
    assert distinct_orders(["a>b", "b>a", "a>b", "c", ""]) == {"a>b": 2, "b>a": 1}


def test_bet_arrays_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [5, 9, 3]
    observations = rng.normal(size=(3, 10, 60))
    actions = rng.uniform(-1, 1, size=(3, 10, 9))
    mask = np.zeros((3, 10))
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    for name, array in [("observations_seq", observations), ("actions_seq", actions), ("existence_mask", mask)]:
        np.save(tmp_path / f"{name}.npy", array)
    buffer = bet_arrays_to_replay_buffer(tmp_path)
    assert buffer.n_episodes == 3 and buffer.episode_lengths.tolist() == lengths
    for i, n in enumerate(lengths):
        episode = buffer.get_episode(i)
        np.testing.assert_allclose(episode["obs"], observations[i, :n].astype(np.float32))
        np.testing.assert_allclose(episode["action"], actions[i, :n].astype(np.float32))
    main(["--from-bet", str(tmp_path), "--out", str(tmp_path / "bet.zarr.zip")])
    loaded = ReplayBuffer.copy_from_path(tmp_path / "bet.zarr.zip")
    np.testing.assert_array_equal(loaded["obs"], buffer["obs"])
    (tmp_path / "existence_mask.npy").unlink()
    with pytest.raises(FileNotFoundError, match="existence_mask"):
        bet_arrays_to_replay_buffer(tmp_path)


def test_generation_zarr_round_trip_and_determinism(tmp_path):
    out = tmp_path / "kitchen.zarr.zip"
    main(["--episodes", "2", "--seed", "7", "--out", str(out)])
    loaded = ReplayBuffer.copy_from_path(out)
    assert loaded.n_episodes == 2
    assert loaded["obs"].shape == (loaded.n_steps, 59) and loaded["obs"].dtype == np.float32
    assert loaded["action"].shape == (loaded.n_steps, 9) and loaded["state"].shape == (loaded.n_steps, 59)
    assert np.abs(loaded["action"]).max() <= 1.0
    again, summaries = generate(1, 8, progress=False)  # episode 2 of the run above
    np.testing.assert_array_equal(again["action"], loaded.get_episode(1)["action"])
    np.testing.assert_array_equal(again["state"], loaded.get_episode(1)["state"])
    assert len(summaries[0]["tasks"]) == 4


def test_subtask_draws_cover_all_seven_in_allowed_orders():
    draws = [sample_subtasks(np.random.default_rng([seed, 1])) for seed in range(300)]
    assert all(len(set(tasks)) == 4 and set(tasks) <= set(SUBTASKS) for tasks in draws)
    assert {task for tasks in draws for task in tasks} == set(SUBTASKS)
    assert len({tuple(tasks) for tasks in draws}) > 150  # sets and orders vary
    for first, then in ORDER_CONSTRAINTS:
        both = [tasks for tasks in draws if first in tasks and then in tasks]
        assert both and all(tasks.index(first) < tasks.index(then) for tasks in both)
    assert sample_subtasks(np.random.default_rng([7, 1])) == draws[7]  # seeded
    earlier = [sample_subtasks(np.random.default_rng(seed), 4, EARLIER_FOUR) for seed in range(300)]
    assert all(sorted(tasks) == sorted(EARLIER_FOUR) for tasks in earlier)
    assert len({tuple(tasks) for tasks in earlier}) == 24  # every order of the earlier set
    with pytest.raises(ValueError, match="cannot draw 5"):
        sample_subtasks(np.random.default_rng(0), 5, EARLIER_FOUR)


def test_parse_subtasks():
    assert parse_subtasks("kettle, top burner") == ("kettle", "top burner")
    for bad in ("kettle,oven", ""):
        with pytest.raises(ValueError, match="choose from"):
            parse_subtasks(bad)


@pytest.mark.parametrize("task, seed", [("bottom burner", 3), ("top burner", 4), ("hinge cabinet", 5)])
def test_expert_does_a_new_subtask_alone(env, task, seed):
    obs, info = env.reset(seed=seed)
    expert = KitchenExpert(env, [task])
    for _ in range(100):
        obs, _, _, _, info = env.step(expert.act(obs))
        if info["completed_subtasks"]:
            break
    assert info["completed_subtasks"] == [task]


@pytest.mark.slow
def test_expert_completes_four_subtasks_in_random_orders():
    env = KitchenEnv()
    episodes = [run_episode(env, seed) for seed in range(200, 212)]  # 4 of all 7 subtasks
    n_completed = [len(episode["completed"]) for episode in episodes]
    assert sum(n == 4 for n in n_completed) >= 11, n_completed
    assert all(len(episode["action"]) <= 280 for episode in episodes)
    assert len({tuple(episode["tasks"]) for episode in episodes}) >= 10  # sets and orders vary
    env.close()


@pytest.mark.slow
def test_expert_completes_the_burners_and_the_hinge_cabinet():
    env = KitchenEnv()
    tasks = ("bottom burner", "top burner", "hinge cabinet", "kettle")
    episodes = [run_episode(env, seed, 4, tasks) for seed in range(300, 306)]
    for episode in episodes:
        assert sorted(episode["completed"]) == sorted(tasks), (episode["tasks"], episode["completed"])
        assert len(episode["action"]) <= 280
        assert episode["tasks"].index("top burner") < episode["tasks"].index("hinge cabinet")
    assert len({tuple(episode["tasks"]) for episode in episodes}) >= 3
    env.close()


@pytest.mark.slow
def test_expert_keeps_the_earlier_four_subtask_episodes():
    env = KitchenEnv()
    episodes = [run_episode(env, seed, 4, EARLIER_FOUR) for seed in range(400, 406)]
    assert all(sorted(episode["completed"]) == sorted(EARLIER_FOUR) for episode in episodes)
    assert all(len(episode["action"]) <= 280 for episode in episodes)
    env.close()


def test_generic_runner_scores_kitchen_episodes():
    from functools import partial

    from envs.common.runner import Episode, VectorEnvRunner
    from envs.kitchen.runner import make_env, train_initial_states

    class HoldStill:
        """Zero actions (nothing gets done); records the observation batches it sees."""

        def __init__(self):
            self.shapes = set()

        def predict_action(self, obs_dict):
            self.shapes.add(tuple(obs_dict["obs"].shape))
            return {"action": np.zeros((obs_dict["obs"].shape[0], 8, 9), dtype=np.float32)}

    open_microwave = train_initial_states(1)[0]
    open_microwave[22] = -0.75
    episodes = [Episode("train", 0, open_microwave), Episode("test", 100000)]
    runner = VectorEnvRunner(partial(make_env, max_episode_steps=16), episodes, n_obs_steps=2, n_action_steps=8,
                             vectorization="sync", show_progress=False)
    policy = HoldStill()
    log = runner.run(policy)
    runner.close()
    assert policy.shapes == {(2, 2, 59)}
    assert log["train/mean_score"] == pytest.approx(1 / 7) and log["test/mean_score"] == 0.0
