"""robomimic evaluation hooks for the generic ``VectorEnvRunner`` (Diffusion Policy's protocol).

The env is rebuilt from the dataset's ``env_args``; "train" episodes start from the first
``states`` row of the first ``n_train`` demos, "test" episodes from seeds 100000, 100001, ...
The reward is robomimic's sparse success (1.0 once the task is solved); an episode ends on
success or at the task's horizon (400 Lift/Can, 700 ToolHang), so its score (max reward) is
its success.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import gymnasium as gym
import numpy as np

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.robomimic_hdf5 import RobomimicReader
from drifting_policy.data.rotation import rot6d_action_to_axis_angle
from envs.common.runner import VectorEnvRunner, dp_episodes
from envs.robomimic.env import LOW_DIM_KEYS, TASKS, RobomimicEnv, image_to_chw_float, low_dim_vector

OBS_TYPES = ("low_dim", "image")


def horizon_of(env_meta: dict) -> int:
    for spec in TASKS.values():
        if spec.env_name == env_meta["env_name"]:
            return spec.horizon
    raise ValueError(f"no horizon known for env {env_meta['env_name']!r}; known: {[s.env_name for s in TASKS.values()]}")


class RobomimicGymEnv(gym.Env):
    """A ``RobomimicEnv`` as a gymnasium env for the vector runner.

    ``obs_type="low_dim"``: the concatenated 19/23/53-D vector of ``LOW_DIM_KEYS``.
    ``obs_type="image"``: a dict of the cameras' CHW float images in [0, 1] plus the robot's
    low-dim keys (DP's robomimic image ``shape_meta``). With ``abs_action`` the policy's
    10-D actions (position, 6-D rotation, gripper) are turned back into the controller's
    axis-angle targets. A pending ``reset_state`` (flattened MuJoCo state, set per worker with
    ``set_attr``) is used by the next reset instead of the seeded placement.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env_meta: dict, obs_type: str = "low_dim", abs_action: bool = False,
                 render_camera: str | None = None, render_size: int = 256):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"RobomimicGymEnv: obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        self.obs_type = obs_type
        self.abs_action = abs_action
        self.render_camera = render_camera
        self.render_size = render_size
        self.env = RobomimicEnv(env_meta, use_images=obs_type == "image", render_offscreen=render_camera is not None)
        self.horizon = horizon_of(env_meta)
        self.reset_state: np.ndarray | None = None
        self._steps = 0
        action_dim = 10 if abs_action else self.env.action_dim
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(action_dim,), dtype=np.float32)
        obs = self._obs(self.env.get_observation())
        if obs_type == "low_dim":
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=obs.shape, dtype=np.float32)
        else:
            self.observation_space = gym.spaces.Dict(
                {k: gym.spaces.Box(-np.inf, np.inf, shape=v.shape, dtype=np.float32) for k, v in obs.items()}
            )

    def _obs(self, raw: dict):
        if self.obs_type == "low_dim":
            return low_dim_vector(raw)
        obs = {key: image_to_chw_float(raw[key]) for key in self.env.camera_keys}
        obs.update({key: np.asarray(raw[key], dtype=np.float32) for key in LOW_DIM_KEYS[1:]})
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        raw = self.env.reset(seed=seed)
        state, self.reset_state = self.reset_state, None
        if state is not None:
            raw = self.env.reset_to(state)
        self._steps = 0
        return self._obs(raw), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"RobomimicGymEnv.step: expected an action of shape {self.action_space.shape}, got {action.shape}")
        if self.abs_action:
            action = rot6d_action_to_axis_angle(action[None])[0]
        raw, _, _, info = self.env.step(action)
        self._steps += 1
        success = bool(info["is_success"])
        return self._obs(raw), float(success), success, self._steps >= self.horizon, {"is_success": success}

    def render(self):
        if self.render_camera is None:
            raise RuntimeError("RobomimicGymEnv was built without render_camera; no frames to render")
        return self.env.render(self.render_camera, self.render_size)


def load_replay_buffer(path: str | Path, obs_keys: Sequence[str], abs_action: bool = False,
                       filter_key: str | None = None) -> ReplayBuffer:
    """A robomimic hdf5 file as a replay buffer (for ``SequenceDataset(data=...)`` in task configs)."""
    return RobomimicReader(path).to_replay_buffer(list(obs_keys), abs_action=abs_action, filter_key=filter_key)


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
            env_fn=functools.partial(
                RobomimicGymEnv, reader.env_meta, obs_type, abs_action, render_camera if wants_video else None, render_size
            ),
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
