"""PushT evaluation: DP's protocol on top of the generic ``VectorEnvRunner``.

"train" episodes start from the initial states of the first ``n_train`` dataset episodes (restored exactly with
``PushTEnv.set_state``); "test" episodes use seeds ``test_start_seed``, ``test_start_seed + 1``, ...
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.common.runner import VectorEnvRunner, dp_episodes
from envs.pusht.env import PushTEnv


def make_pusht_env(obs_type: str = "keypoints", render_size: int = 256) -> PushTEnv:
    return PushTEnv(obs_type=obs_type, render_size=render_size)


def dataset_initial_states(dataset_path: str | Path, n: int) -> list[np.ndarray]:
    """(5,) states at the start of the first ``n`` episodes of a PushT replay buffer."""
    buffer = ReplayBuffer.copy_from_path(dataset_path, keys=["state"])
    if n > buffer.n_episodes:
        raise ValueError(f"{dataset_path}: asked for {n} train initial states, the dataset has {buffer.n_episodes} "
                         "episodes")
    starts = np.concatenate([[0], buffer.episode_ends[:-1]])[:n]
    return [buffer["state"][i] for i in starts]


class PushTRunner(VectorEnvRunner):
    """``obs_type="keypoints"`` gives low-dim policies ``{"obs": (B, To, 20)}``; ``obs_type="image"`` gives
    ``{"image": (B, To, 3, 96, 96), "agent_pos": (B, To, 2)}`` (``obs_keys`` selects and orders the keys)."""

    def __init__(
        self,
        dataset_path: str | Path | None = None,
        obs_type: str = "keypoints",
        n_train: int = 6,
        n_train_vis: int = 2,
        train_start_seed: int = 0,
        n_test: int = 50,
        n_test_vis: int = 4,
        test_start_seed: int = 100000,
        n_obs_steps: int = 2,
        n_action_steps: int = 8,
        n_envs: int | None = None,
        vectorization: str = "async",
        obs_keys: Sequence[str] | None = None,
        output_dir: str | Path | None = None,
        render_size: int = 256,
        fps: int = 10,
        video_format: str = "mp4",
        show_progress: bool = True,
    ):
        train_states = dataset_initial_states(dataset_path, n_train) if dataset_path and n_train > 0 else []
        episodes = dp_episodes(train_states, n_test, test_start_seed, train_start_seed, n_train_vis, n_test_vis)
        super().__init__(
            env_fn=functools.partial(make_pusht_env, obs_type, render_size),
            episodes=episodes,
            n_obs_steps=n_obs_steps,
            n_action_steps=n_action_steps,
            n_envs=n_envs,
            vectorization=vectorization,
            obs_keys=obs_keys,
            output_dir=output_dir,
            video_format=video_format,
            fps=fps,
            show_progress=show_progress,
        )
