"""robomimic evaluation hooks for the generic ``VectorEnvRunner`` (Diffusion Policy's protocol).

The env is rebuilt from the dataset's ``env_args``; "train" episodes start from the first
``states`` row of the first ``n_train`` demos, "test" episodes from seeds 100000, 100001, ...
The reward is robomimic's sparse success (1.0 once the task is solved); an episode ends on
success or at the task's horizon (400 Lift/Can, 700 ToolHang), so its score (max reward) is
its success.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drifting_policy.data.robomimic_hdf5 import RobomimicReader
from envs.common.runner import VectorEnvRunner, dp_episodes
from envs.robomimic.env import RobomimicGymEnv


def dataset_initial_states(reader: RobomimicReader, n: int) -> list[np.ndarray]:
    names = reader.demo_names()
    if n > len(names):
        raise ValueError(f"{reader.path}: asked for {n} train initial states, the dataset has {len(names)} demos")
    return [reader.get_demo(name)["states"][0] for name in names[:n]]


class RobomimicRunner(VectorEnvRunner):
    """DP's robomimic runner on the generic vector runner: env from the dataset's ``env_args``."""

    def __init__(
        self,
        dataset_path: str | Path,
        obs_type: str = "low_dim",
        abs_action: bool = False,
        obs_keys: Sequence[str] | None = None,
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
        render_camera: str = "agentview",
        render_size: int = 256,
        fps: int = 10,
        video_format: str = "mp4",
        output_dir: str | Path | None = None,
        show_progress: bool = True,
        # Workers forked from a process that has imported robosuite hang creating their EGL render context;
        # forkserver workers start from a clean process.
        start_method: str | None = "forkserver",
    ):
        reader = RobomimicReader(dataset_path)
        train_states = dataset_initial_states(reader, n_train) if n_train > 0 else []
        episodes = dp_episodes(train_states, n_test, test_start_seed, train_start_seed, n_train_vis, n_test_vis)
        wants_video = output_dir is not None and (n_train_vis > 0 or n_test_vis > 0)
        super().__init__(
            env_fn=functools.partial(RobomimicGymEnv, reader.env_meta, obs_type, abs_action,
                                     render_camera if wants_video else None, render_size),
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
            start_method=start_method,
        )
