"""robosuite environments created from robomimic-style ``env_meta`` dicts.

A robomimic hdf5 file stores, in ``data.attrs["env_args"]``, the JSON of
``{"env_name", "type", "env_kwargs"}``; robomimic rebuilds the simulator from it with
``EnvUtils.create_env_from_metadata``. ``RobomimicEnv`` is the small equivalent built on
robosuite alone (robomimic's package imports mujoco_py and torchvision, so it is not used):
it applies the same creation-time overrides, returns observations under robomimic's keys
(``object``, ``robot0_*``, ``<camera>_image`` flipped upright) and exposes the flattened
MuJoCo state robomimic stores as ``states``. ``RobomimicGymEnv`` wraps it as the gymnasium env the
evaluation runner steps.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import robosuite  # noqa: E402

from drifting_policy.data.rotation import rot6d_action_to_axis_angle  # noqa: E402

ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE
MODEL_SEED = 0  # seeds robosuite's model randomisation at construction (see RobomimicEnv)

# Observation keys of DP's robomimic low-dim configs, in the order they are concatenated.
LOW_DIM_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


@dataclass(frozen=True)
class TaskSpec:
    """What differs between the robomimic tasks we support."""

    env_name: str
    horizon: int  # evaluation horizon of robomimic's ph datasets
    object_dim: int  # size of the "object" observation
    cameras: tuple[str, ...]  # robomimic's image-dataset cameras
    image_size: int  # robomimic's image-dataset resolution (square)

    @property
    def low_dim(self) -> int:
        return self.object_dim + 3 + 4 + 2


TASKS = {
    "lift": TaskSpec("Lift", 400, 10, ("agentview", "robot0_eye_in_hand"), 84),
    "can": TaskSpec("PickPlaceCan", 400, 14, ("agentview", "robot0_eye_in_hand"), 84),
    # robomimic's ToolHang image data uses the side camera at 240x240 (DP crops 216 from it).
    "toolhang": TaskSpec("ToolHang", 700, 44, ("sideview", "robot0_eye_in_hand"), 240),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ValueError(f"unknown robomimic task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def osc_pose_controller(control_delta: bool = True) -> dict:
    """robosuite 1.4's default OSC_POSE controller config, as stored in robomimic's ph files."""
    return {
        "type": "OSC_POSE",
        "input_max": 1,
        "input_min": -1,
        "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
        "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
        "kp": 150,
        "damping_ratio": 1,
        "impedance_mode": "fixed",
        "kp_limits": [0, 300],
        "damping_ratio_limits": [0, 10],
        "position_limits": None,
        "orientation_limits": None,
        "uncouple_pos_ori": True,
        "control_delta": control_delta,
        "interpolation": None,
        "ramp_ratio": 0.2,
    }


def make_env_meta(task: str, abs_action: bool = False, image: bool = False, image_size: int | None = None) -> dict:
    """The ``env_args`` we store in our hdf5 files, mirroring a robomimic ph file of ``task``.

    ``abs_action`` switches the controller to absolute targets (``control_delta=False``), as DP's
    ``*_abs`` datasets do; ``image`` adds the task's two cameras at robomimic's resolution
    (or ``image_size``).
    """
    spec = task_spec(task)
    size = spec.image_size if image_size is None else image_size
    env_kwargs = {
        "has_renderer": False,
        "has_offscreen_renderer": image,
        "ignore_done": True,
        "use_object_obs": True,
        "use_camera_obs": image,
        "control_freq": 20,
        "controller_configs": osc_pose_controller(control_delta=not abs_action),
        "robots": ["Panda"],
        "camera_depths": False,
        "camera_heights": size,
        "camera_widths": size,
        "reward_shaping": False,
    }
    if image:
        env_kwargs["camera_names"] = list(spec.cameras)
    return {"env_name": spec.env_name, "type": ROBOSUITE_ENV_TYPE, "env_kwargs": env_kwargs}


def image_to_chw_float(image: np.ndarray) -> np.ndarray:
    """HWC uint8 image -> CHW float32 in [0, 1], the layout DP's image policies take."""
    return np.ascontiguousarray(np.moveaxis(image, -1, -3), dtype=np.float32) / 255.0


class RobomimicEnv:
    """A robosuite env built from ``env_meta``, with robomimic's observation and state API.

    ``use_images`` defaults to the meta's ``use_camera_obs``; pass False to step a
    state-only copy of an image task, and ``render_offscreen`` to ``render`` frames (videos)
    without image observations. Images come back HWC uint8 upright (robomimic's
    dataset layout); ``image_to_chw_float`` turns them into policy input. Shadows and
    reflections are switched off for speed. Resets are soft: the model is built once, with a
    fixed seed, and ``reset(seed)`` samples the object placements.
    """

    def __init__(self, env_meta: dict, use_images: bool | None = None, render_offscreen: bool = False):
        for key in ("env_name", "type", "env_kwargs"):
            if key not in env_meta:
                raise KeyError(f"env_meta is missing {key!r}; expected keys env_name, type, env_kwargs")
        if env_meta["type"] != ROBOSUITE_ENV_TYPE:
            raise ValueError(f"env_meta type {env_meta['type']!r} is not robosuite ({ROBOSUITE_ENV_TYPE})")
        kwargs = copy.deepcopy(env_meta["env_kwargs"])
        if use_images is None:
            use_images = bool(kwargs.get("use_camera_obs", False))
        # The same overrides robomimic's EnvRobosuite applies when it creates an env.
        kwargs.update(
            has_renderer=False,
            has_offscreen_renderer=use_images or render_offscreen,
            ignore_done=True,
            use_object_obs=True,
            use_camera_obs=use_images,
            camera_depths=False,
            hard_reset=False,
        )
        if use_images and "camera_names" not in kwargs:
            raise ValueError(f"env_meta for {env_meta['env_name']} asks for images but has no env_kwargs.camera_names")
        self.env_meta = copy.deepcopy(env_meta)
        self.env_name = env_meta["env_name"]
        self.camera_keys = tuple(f"{c}_image" for c in kwargs["camera_names"]) if use_images else ()
        # robosuite draws model randomisation (e.g. Lift's cube size) from numpy's global RNG when it
        # builds the model; fix that draw so every instance, in any process, has the same model and
        # a stored state means the same thing everywhere.
        outer_rng = np.random.get_state()
        np.random.seed(MODEL_SEED)
        try:
            self.env = robosuite.make(self.env_name, **kwargs)
        finally:
            np.random.set_state(outer_rng)
        self._disable_shadows_and_reflections()
        # robomimic switches these on, so its datasets carry robot0_joint_pos and robot0_eef_vel_*.
        for name in self.env.observation_names:
            if "joint_pos" in name or "eef_vel" in name:
                self.env.modify_observable(observable_name=name, attribute="active", modifier=True)

    def _disable_shadows_and_reflections(self) -> None:
        model = self.env.sim.model._model
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0

    @property
    def sim(self):
        return self.env.sim

    @property
    def action_dim(self) -> int:
        return self.env.action_dim

    def reset(self, seed: int | None = None) -> dict:
        """New episode; robosuite 1.4 samples object placements from numpy's global RNG,
        so ``seed`` seeds that RNG."""
        if seed is not None:
            np.random.seed(seed)
        return self._observation(self.env.reset())

    def reset_to(self, state: np.ndarray) -> dict:
        """Set the flattened MuJoCo state (robomimic's ``states`` rows) and return its observation."""
        state = np.asarray(state, dtype=np.float64)
        expected = self.get_state().shape
        if state.shape != expected:
            raise ValueError(f"{self.env_name} state has shape {state.shape}, expected {expected}")
        self.env.sim.set_state_from_flattened(state)
        self.env.sim.forward()
        return self.get_observation()

    def get_state(self) -> np.ndarray:
        return np.array(self.env.sim.get_state().flatten())

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, dict]:
        """One control step; reward is robosuite's sparse success reward, done is always False
        (robomimic rolls out to a fixed horizon)."""
        raw, reward, _, info = self.env.step(np.asarray(action, dtype=np.float64))
        info["is_success"] = self.is_success()
        return self._observation(raw), float(reward), False, info

    def render(self, camera: str = "agentview", size: int = 256) -> np.ndarray:
        """(size, size, 3) uint8 upright frame from ``camera`` (needs an offscreen renderer)."""
        return np.ascontiguousarray(self.env.sim.render(width=size, height=size, camera_name=camera)[::-1])

    def is_success(self) -> bool:
        return bool(self.env._check_success())

    def get_observation(self) -> dict:
        return self._observation(self.env._get_observations(force_update=True))

    def _observation(self, raw: dict) -> dict:
        obs = {"object": np.asarray(raw["object-state"], dtype=np.float64)}
        for key, value in raw.items():
            if key.startswith("robot0_") and not key.endswith("proprio-state") and key not in self.camera_keys:
                obs[key] = np.asarray(value)
        for key in self.camera_keys:
            # robosuite renders with OpenGL's bottom-up row order; robomimic stores images upright.
            obs[key] = np.ascontiguousarray(raw[key][::-1])
        return obs


def low_dim_vector(obs: dict) -> np.ndarray:
    """DP's concatenated low-dim observation (19-D Lift, 23-D Can, 53-D ToolHang)."""
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in LOW_DIM_KEYS])


OBS_TYPES = ("low_dim", "image")


def horizon_of(env_meta: dict) -> int:
    for spec in TASKS.values():
        if spec.env_name == env_meta["env_name"]:
            return spec.horizon
    known = [spec.env_name for spec in TASKS.values()]
    raise ValueError(f"no horizon known for env {env_meta['env_name']!r}; known: {known}")


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
            raise ValueError(f"RobomimicGymEnv.step: expected an action of shape {self.action_space.shape}, "
                             f"got {action.shape}")
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
