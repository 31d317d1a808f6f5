"""Franka Kitchen with all 7 subtasks, a flat low-dim observation and per-episode perturbed starts.

Wraps gymnasium-robotics' ``FrankaKitchen-v1`` (mujoco 3.x). What the wrapper adds:

* a flat observation vector (two layouts, below) instead of the goal-env dict;
* completion tracking of the 7 subtasks in the order they happen (``info["completed_subtasks"]``);
  a subtask counts the first step its joints are within 0.3 (L2) of the goal and stays counted;
* ``get_state`` / ``set_state`` on the full MuJoCo state (qpos 30 + qvel 29);
* a seeded perturbation of the initial arm and object state (``FrankaKitchen-v1`` always resets to the
  same state; its seed only changes sensor noise).

Action semantics (read from ``FrankaRobot.step``, checked in tests): ``a`` in [-1, 1]^9 is a "velocity" in
units of 2 rad/s (2 m/s for the fingers). The env turns it into a position target
``ctrl = q_obs + 2 * a * dt`` with ``dt = 0.08`` s (40 physics steps of 2 ms), where ``q_obs`` is the *last
observed* (noisy) joint position, clips it to the joint limits, and holds it for 40 physics steps of the
position actuators (kp 870 / 120 / 500, no gravity compensation). So one action moves each joint's target at
most 0.16 rad from where it was last seen, and a zero action lets the arm sag under gravity.

Observation layouts:

* ``"full"`` (59-D, default): FrankaKitchen-v1's own vector,
  robot qpos [0:9] (7 arm joints, 2 fingers), robot qvel [9:18], object qpos [18:39] (21 values: burner
  knobs/plates 0-7, light switch 8-9, slide 10, hinge doors 11-12, microwave 13, kettle position 14-16 and
  quaternion 17-20), object qvel [39:59] (20 values), with the env's uniform sensor noise.
* ``"dp60"`` (60-D): the relay-kitchen layout of Diffusion Policy's ``kitchen_lowdim`` (BET's arrays):
  robot qpos [0:9], object qpos [9:30], then a 30-D goal vector that is zero except the 7 subtasks' goal
  values at their qpos indices. It has no velocities. Policies trained on BET's data use this layout,
  but that data was recorded in the older mujoco-py model, so dynamics and noise differ.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import gymnasium_robotics
import numpy as np
from gymnasium import spaces
from gymnasium_robotics.envs.franka_kitchen.kitchen_env import BONUS_THRESH, OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

gym.register_envs(gymnasium_robotics)

SUBTASKS = (
    "microwave",
    "kettle",
    "bottom burner",
    "top burner",
    "light switch",
    "slide cabinet",
    "hinge cabinet",
)
N_QPOS, N_QVEL, N_ROBOT = 30, 29, 9
OBS_LAYOUTS = {"full": 59, "dp60": 60}
EPISODE_STEPS = 280
CONTROL_DT = 0.08  # seconds per env step (12.5 Hz)
ACTION_SCALE = 2.0 * CONTROL_DT  # joint-target offset (rad or m) per unit action


def subtask_distances(qpos: np.ndarray) -> dict[str, float]:
    """L2 distance of each subtask's joints to its goal, from the true (noise-free) qpos."""
    return {task: float(np.linalg.norm(qpos[OBS_ELEMENT_INDICES[task]] - OBS_ELEMENT_GOALS[task]))
            for task in SUBTASKS}


def completed_in_state(qpos: np.ndarray) -> list[str]:
    """Subtasks whose joints are within the completion threshold in this state (in SUBTASKS order)."""
    return [task for task, dist in subtask_distances(qpos).items() if dist < BONUS_THRESH]


def goal_vector() -> np.ndarray:
    """The relay-kitchen 30-D goal: zeros except every subtask's goal at its qpos indices."""
    goal = np.zeros(N_QPOS)
    for task in SUBTASKS:
        goal[OBS_ELEMENT_INDICES[task]] = OBS_ELEMENT_GOALS[task]
    return goal


class KitchenEnv(gym.Env):
    """All-subtask Franka Kitchen.

    The reward is the fraction of the 7 subtasks completed so far (non-decreasing), so an episode's maximum
    reward equals Diffusion Policy's Kitchen score (its per-step completion counts summed, divided by 7).

    ``reset(seed=s)`` perturbs the initial state from ``np.random.default_rng(s)``: arm joints by up to
    ``arm_noise`` rad, the closed doors/knobs/switch by up to ``object_noise`` towards open (far from the
    completion threshold), and the kettle's xy by up to ``kettle_noise`` m. ``reset(options={"state": s})``
    or a non-None ``reset_state`` attribute (set by the vector runner) starts from a ``get_state`` vector
    instead. The episode is truncated after ``max_episode_steps`` and terminates early once all 7 subtasks
    are done.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(self, obs_layout: str = "full", max_episode_steps: int = EPISODE_STEPS,
                 arm_noise: float = 0.1, object_noise: float = 0.03, kettle_noise: float = 0.02,
                 render_size: tuple[int, int] = (240, 360)):
        if obs_layout not in OBS_LAYOUTS:
            raise ValueError(f"KitchenEnv: obs_layout must be one of {sorted(OBS_LAYOUTS)}, got {obs_layout!r}")
        self.obs_layout = obs_layout
        self.max_episode_steps = max_episode_steps
        self.arm_noise, self.object_noise, self.kettle_noise = arm_noise, object_noise, kettle_noise
        height, width = render_size
        self._kitchen = gym.make(
            "FrankaKitchen-v1", tasks_to_complete=list(SUBTASKS), terminate_on_tasks_completed=False,
            render_mode="rgb_array", width=width, height=height,
        ).unwrapped
        self.model, self.data = self._kitchen.model, self._kitchen.data
        # Offscreen rendering without a GPU: shadows and reflections made a 240x360 frame take 1.5 s here (9 s
        # beside training runs); without them 0.15 s. Visual-only model fields; the physics is unchanged.
        self.model.light_castshadow[:] = 0
        self.model.mat_reflectance[:] = 0
        self.init_qpos = self._kitchen.robot_env.init_qpos.copy()
        self.action_space = self._kitchen.action_space
        dim = OBS_LAYOUTS[obs_layout]
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float64)
        self._goal = goal_vector()
        self.completed_subtasks: list[str] = []
        self._steps = 0
        self.reset_state: np.ndarray | None = None

    # --- state -------------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Full MuJoCo state: qpos (30) followed by qvel (29)."""
        return np.concatenate([self.data.qpos, self.data.qvel]).copy()

    def set_state(self, state: np.ndarray) -> np.ndarray:
        """Restore a ``get_state`` vector and return the observation of that state.

        Completion tracking is not reset here: a subtask that is complete in ``state`` is counted at the
        next ``step``, as the env would when crossing the threshold.
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (N_QPOS + N_QVEL,):
            raise ValueError(f"KitchenEnv.set_state: expected shape ({N_QPOS + N_QVEL},) = qpos 30 + qvel 29, "
                             f"got {state.shape}")
        self._kitchen.robot_env.set_state(state[:N_QPOS], state[N_QPOS:])
        return self._observe()

    # --- gym API -----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._kitchen.reset(seed=int(self.np_random.integers(2**31)))  # seeds the sensor noise
        self.completed_subtasks = []
        self._steps = 0
        state = (options or {}).get("state", self.reset_state)
        if state is None:
            state = np.concatenate([self._perturbed_qpos(), np.zeros(N_QVEL)])
        return self.set_state(state), self._info()

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (N_ROBOT,):
            raise ValueError(f"KitchenEnv.step: expected an action of shape ({N_ROBOT},), got {action.shape}")
        self._kitchen.robot_env.step(action)
        self._steps += 1
        newly = [t for t in completed_in_state(self.data.qpos) if t not in self.completed_subtasks]
        self.completed_subtasks.extend(newly)
        terminated = len(self.completed_subtasks) == len(SUBTASKS)
        truncated = self._steps >= self.max_episode_steps
        reward = len(self.completed_subtasks) / len(SUBTASKS)
        return self._observe(), reward, terminated, truncated, self._info()

    def render(self) -> np.ndarray:
        return self._kitchen.render()

    def close(self):
        self._kitchen.close()

    # --- internals ---------------------------------------------------------------------------------
    def _perturbed_qpos(self) -> np.ndarray:
        rng = self.np_random
        qpos = self.init_qpos.copy()
        qpos[:7] += rng.uniform(-self.arm_noise, self.arm_noise, size=7)
        # doors, knobs and the switch start closed at a joint limit; nudge each into its range
        lo, hi = self.model.jnt_range[9:23].T
        toward_open = np.where(np.abs(lo) > np.abs(hi), -1.0, 1.0)
        scale = np.minimum(self.object_noise, hi - lo)
        qpos[9:23] = np.clip(qpos[9:23] + toward_open * rng.uniform(0.0, 1.0, size=14) * scale, lo, hi)
        qpos[23:25] += rng.uniform(-self.kettle_noise, self.kettle_noise, size=2)
        return qpos

    def _observe(self) -> np.ndarray:
        """Observation of the current sim state; also refreshes the env's last observed joint positions,
        which the next action is relative to."""
        flat = self._kitchen._get_obs(self._kitchen.robot_env._get_obs())["observation"]
        if self.obs_layout == "full":
            return flat
        robot_qpos = flat[:N_ROBOT]
        object_qpos = flat[2 * N_ROBOT:2 * N_ROBOT + N_QPOS - N_ROBOT]
        return np.concatenate([robot_qpos, object_qpos, self._goal])

    def _info(self) -> dict[str, Any]:
        return {"completed_subtasks": list(self.completed_subtasks),
                "n_completed": len(self.completed_subtasks)}


def phase_fractions(n_completed: np.ndarray, max_n: int = len(SUBTASKS)) -> dict[int, float]:
    """{n: p_n}, p_n = fraction of episodes that completed at least n subtasks, for n = 1..max_n."""
    n_completed = np.asarray(n_completed)
    return {n: float(np.mean(n_completed >= n)) for n in range(1, max_n + 1)}
