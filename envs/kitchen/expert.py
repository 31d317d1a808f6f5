"""Scripted Franka Kitchen expert: 4 subtasks in a seeded random order, solved by damped-least-squares IK.

The expert reads the privileged sim state (``env.data``). Each subtask is a short list of phases; a phase
gives an end-effector target (position and orientation of the ``end_effector`` site, world frame), a gripper
command and a test for when it is done: approach in free space, grasp or line up, manipulate, let go, retreat.
Manipulation phases aim a little ahead of the object's current pose (the microwave handle 0.12 rad further
along its arc), so the arm drags the object along its joint.

Scripted subtasks: microwave (grip the handle, pull it round its hinge), kettle (grip the handle bar with the
hand rolled 90 degrees, lift, carry to the back-left burner, set down), light switch and slide cabinet (closed
fingers push the lever left / the door right). The burner knobs are not scripted: at knob height the forward-
pointing hand needs joint 6 at its limit and the IK leaves the knob centre by ~3 cm; the hinge door is not
scripted either. So an episode draws one of the 24 orders of the 4 scripted subtasks.

Turning an end-effector target into an env action (see ``envs.kitchen.env`` for the action semantics):
an IK step gives joint targets ``q + dq``; the position actuators have no gravity compensation and heavy
joint damping, so the commanded joint position adds ``qfrc_bias / kp`` (gravity) and ``damping * dq / (kp dt)``
(velocity feed-forward); the action is that command minus the observed joints, divided by 0.16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from envs.kitchen.env import ACTION_SCALE, CONTROL_DT, KitchenEnv

# the subtasks this expert scripts (see the module docstring for the others)
FEASIBLE_SUBTASKS = ("microwave", "kettle", "light switch", "slide cabinet")
N_ARM = 7

# gripper pointing forward (+y), fingers opening along world x; columns are the site's x, y, z axes
FORWARD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# the same, rolled 90 degrees about the approach axis so the fingers open vertically (kettle handle bar);
# this sense of roll turns joint 7 away from its upper limit, where the arm starts
FORWARD_ROLLED = Rotation.from_rotvec([0.0, -np.pi / 2, 0.0]).as_matrix() @ FORWARD
OPEN, CLOSE = 1.0, -1.0
FAST = 0.08  # metres per step in free space (1 m/s); contact phases use Phase's default 0.03
TRANSIT_POSTURE_GAIN = 0.3  # free-space moves also restore the start posture, so every subtask starts alike


def rot_z(angle: float) -> np.ndarray:
    return Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix()


class IKController:
    """Maps an end-effector pose target to a FrankaKitchen action through one DLS IK step."""

    def __init__(self, model: mujoco.MjModel, damping: float = 0.05, max_rot_step: float = 0.25):
        self.model = model
        self.scratch = mujoco.MjData(model)
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        self.damping, self.max_rot_step = damping, max_rot_step
        self.kp = model.actuator_gainprm[:N_ARM, 0].copy()
        self.joint_damping = model.dof_damping[:N_ARM].copy()
        self.rest = None
        margin = 0.05  # rad kept from each joint limit
        self.lower = model.jnt_range[:N_ARM, 0] + margin
        self.upper = model.jnt_range[:N_ARM, 1] - margin

    def site_pose(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        return data.site_xpos[self.site].copy(), data.site_xmat[self.site].reshape(3, 3).copy()

    def action(self, data: mujoco.MjData, q_observed: np.ndarray, pos: np.ndarray, rot: np.ndarray,
               grip: float, max_step: float = 0.03, posture_gain: float = 0.05) -> np.ndarray:
        """Action towards the site pose (pos, rot), moving at most ``max_step`` metres this step and pulling
        the arm towards its start posture by ``posture_gain`` of the difference in the task's null space."""
        q = data.qpos[:N_ARM].copy()
        if self.rest is None:
            self.rest = q.copy()
        cur_pos, cur_rot = self.site_pose(data)
        err_pos = _clip_norm(pos - cur_pos, max_step)
        err_rot = _clip_norm(Rotation.from_matrix(rot @ cur_rot.T).as_rotvec(), self.max_rot_step)
        dq = self._joint_step(q, self._jacobian(data), np.concatenate([err_pos, err_rot]), posture_gain)
        command = (q + dq + data.qfrc_bias[:N_ARM] / self.kp
                   + self.joint_damping * dq / (self.kp * CONTROL_DT))
        action = np.empty(9)
        action[:N_ARM] = (command - q_observed[:N_ARM]) / ACTION_SCALE
        action[N_ARM:] = grip
        return np.clip(action, -1.0, 1.0)

    def _joint_step(self, q: np.ndarray, jac: np.ndarray, err: np.ndarray, posture_gain: float) -> np.ndarray:
        """DLS step plus a pull towards the start posture in the null space; joints that would cross their
        limits are frozen and the step is solved again with the others (the arm starts near joint 2's limit)."""
        free = np.ones(N_ARM)
        for _ in range(3):
            jac_free = jac * free
            lhs = jac_free @ jac_free.T + self.damping**2 * np.eye(6)
            dq = jac_free.T @ np.linalg.solve(lhs, err)
            nullspace = np.eye(N_ARM) - np.linalg.pinv(jac_free) @ jac_free
            dq += free * (nullspace @ (posture_gain * (self.rest - q)))
            blocked = ((q + dq < self.lower) & (dq < 0)) | ((q + dq > self.upper) & (dq > 0))
            if not blocked.any():
                break
            free[blocked] = 0.0
        return np.clip(q + dq, np.minimum(q, self.lower), np.maximum(q, self.upper)) - q

    def _jacobian(self, data: mujoco.MjData) -> np.ndarray:
        self.scratch.qpos[:] = data.qpos
        mujoco.mj_kinematics(self.model, self.scratch)
        mujoco.mj_comPos(self.model, self.scratch)
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.scratch, jacp, jacr, self.site)
        return np.vstack([jacp[:, :N_ARM], jacr[:, :N_ARM]])


def _clip_norm(vec: np.ndarray, limit: float) -> np.ndarray:
    norm = np.linalg.norm(vec)
    return vec if norm <= limit else vec * (limit / norm)


@dataclass
class Phase:
    """One segment of a subtask: a pose target (recomputed every step), a gripper command, an exit test,
    a step limit and a speed (metres per step; free-space transits run at ``FAST``)."""

    target: Callable[[mujoco.MjData], tuple[np.ndarray, np.ndarray]]
    grip: float
    done: Callable[[mujoco.MjData, float], bool]  # (data, position error) -> finished
    max_steps: int = 60
    speed: float = 0.03


def reached(tol: float) -> Callable[[mujoco.MjData, float], bool]:
    return lambda data, err: err < tol


class SubtaskScripts:
    """Phase lists for each feasible subtask, built from the kitchen's geometry (site and joint names)."""

    def __init__(self, model: mujoco.MjModel):
        def site(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)

        def qadr(name):
            return model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)]

        self.site, self.qadr = site, qadr
        self.ee = site("end_effector")

    def phases(self, task: str, data: mujoco.MjData) -> list[Phase]:
        return getattr(self, "_" + task.replace(" ", "_"))(data)

    # -- helpers ---------------------------------------------------------------------------------------
    def _site_pos(self, data, name) -> np.ndarray:
        return data.site_xpos[self.site(name)].copy()

    def _retreat(self, rot=FORWARD, back: float = 0.12, grip: float = OPEN) -> Phase:
        """Pull the hand straight back (-y) from wherever it is, keeping the fingers' setting."""
        anchor = {}

        def target(data):
            if "pos" not in anchor:
                anchor["pos"] = data.site_xpos[self.ee].copy() + np.array([0.0, -back, 0.0])
            return anchor["pos"], rot

        return Phase(target, grip, reached(0.03), 12, FAST)

    # -- subtasks --------------------------------------------------------------------------------------
    def _microwave(self, data) -> list[Phase]:
        """Grip the handle and pull it round the door's hinge, turning the hand with the door."""
        hinge = self.qadr("microwave")
        centre = np.array([-1.128, 0.455])  # the door's hinge axis (x, y)
        handle0 = self._site_pos(data, "microhandle_site")
        angle0 = data.qpos[hinge]
        offset = rot_z(-angle0)[:2, :2] @ (handle0[:2] - centre)  # handle at door angle 0

        def handle_at(angle, back):
            xy = centre + rot_z(angle)[:2, :2] @ offset
            normal = rot_z(angle)[:2, :2] @ np.array([0.0, -1.0])
            return np.array([*(xy + back * normal), handle0[2]])

        def approach(data):
            return handle_at(data.qpos[hinge], 0.12), rot_z(data.qpos[hinge]) @ FORWARD

        def grasp(data):
            return handle_at(data.qpos[hinge], 0.0), rot_z(data.qpos[hinge]) @ FORWARD

        def pull(data):
            angle = data.qpos[hinge] - 0.12  # aim 0.12 rad along the arc
            return handle_at(angle, -0.01), rot_z(0.5 * angle) @ FORWARD  # half the door's yaw: grips best

        opened = lambda data, err: data.qpos[hinge] < -0.5  # counted at -0.45; the arm's reach ends near -0.55
        return [Phase(approach, OPEN, reached(0.03), speed=FAST), Phase(grasp, OPEN, reached(0.015), 20),
                Phase(grasp, CLOSE, lambda d, e: d.qpos[7] + d.qpos[8] < 0.04, 6),
                Phase(pull, CLOSE, opened, 50), Phase(pull, OPEN, lambda d, e: d.qpos[7] > 0.03, 6),
                self._retreat(rot_z(-0.35) @ FORWARD)]

    def _sweep(self, start: np.ndarray, end: np.ndarray, done) -> list[Phase]:
        """Closed fingers as a paddle: come in from the robot's side to ``start``, then push to ``end``."""
        before = start + np.array([0.0, -0.12, 0.0])
        return [Phase(lambda d: (before, FORWARD), CLOSE, reached(0.03), speed=FAST),
                Phase(lambda d: (start, FORWARD), CLOSE, reached(0.015), 20),
                Phase(lambda d: (end, FORWARD), CLOSE, done, 40),
                self._retreat(FORWARD, grip=CLOSE)]

    def _light_switch(self, data) -> list[Phase]:
        """Push the switch lever to the left (-x) from its right side."""
        lever = self._site_pos(data, "light_site")
        joint = self.qadr("light_switch")
        return self._sweep(lever + [0.07, -0.02, 0.0], lever + [-0.12, -0.05, 0.0],
                           lambda d, e: d.qpos[joint] < -0.55)

    def _slide_cabinet(self, data) -> list[Phase]:
        """Push the sliding door's handle to the right (+x) from its left side."""
        handle = self._site_pos(data, "slide_site")
        joint = self.qadr("slide_cabinet")
        return self._sweep(handle + [-0.05, 0.0, 0.0], handle + [0.3, 0.0, 0.0],
                           lambda d, e: d.qpos[joint] > 0.2)

    def _kettle(self, data) -> list[Phase]:
        """Grip the handle bar with the fingers opening vertically, lift, carry to the back burner, set down."""
        bar = self._site_pos(data, "kettle_site") + np.array([0.0, 0.0, 0.008])
        lifted = bar + np.array([0.0, 0.0, 0.06])
        above_goal = np.array([-0.23, 0.70, lifted[2]])
        placed = np.array([-0.23, 0.70, bar[2] + 0.01])
        return [Phase(lambda d: (bar + [0.0, -0.18, 0.08], FORWARD_ROLLED), OPEN, reached(0.03), speed=FAST),
                Phase(lambda d: (bar + [0.0, -0.12, 0.0], FORWARD_ROLLED), OPEN, reached(0.015)),
                Phase(lambda d: (bar, FORWARD_ROLLED), OPEN, reached(0.012), 20),
                Phase(lambda d: (bar, FORWARD_ROLLED), CLOSE, lambda d, e: d.qpos[7] + d.qpos[8] < 0.07, 6),
                Phase(lambda d: (lifted, FORWARD_ROLLED), CLOSE, reached(0.02), 20),
                Phase(lambda d: (above_goal, FORWARD_ROLLED), CLOSE, reached(0.03), 40),
                Phase(lambda d: (placed, FORWARD_ROLLED), CLOSE, reached(0.02), 15),
                Phase(lambda d: (placed, FORWARD_ROLLED), OPEN, lambda d, e: d.qpos[7] > 0.035, 6),
                self._retreat(FORWARD_ROLLED, back=0.2)]  # the fingertips reach 5 cm past the bar


class KitchenExpert:
    """Runs the phases of ``tasks`` in order; ``act(obs)`` returns the next env action."""

    def __init__(self, env: KitchenEnv, tasks: list[str]):
        unknown = [t for t in tasks if t not in FEASIBLE_SUBTASKS]
        if unknown:
            raise ValueError(f"KitchenExpert: no script for {unknown}; scripted subtasks are {FEASIBLE_SUBTASKS}")
        self.env, self.tasks = env, list(tasks)
        self.ik = IKController(env.model)
        self.scripts = SubtaskScripts(env.model)
        self.queue: list[Phase] = []
        self.task_index = -1
        self.phase_steps = 0
        self.holding = False

    def act(self, obs: np.ndarray) -> np.ndarray:
        data = self.env.data
        phase = self._current_phase(data)
        pos, rot = phase.target(data)
        self.phase_steps += 1
        posture_gain = TRANSIT_POSTURE_GAIN if phase.speed == FAST else 0.05  # fast phases are the transits
        return self.ik.action(data, obs[:9], pos, rot, phase.grip, phase.speed, posture_gain)

    def _current_phase(self, data) -> Phase:
        while True:
            if self.queue:
                phase = self.queue[0]
                pos, _ = phase.target(data)
                err = float(np.linalg.norm(pos - data.site_xpos[self.scripts.ee]))
                if not (phase.done(data, err) or self.phase_steps >= phase.max_steps):
                    return phase
                self.queue.pop(0)
                self.phase_steps = 0
                continue
            if self.task_index + 1 >= len(self.tasks):
                return self._hold(data)
            self.task_index += 1
            self.queue = self.scripts.phases(self.tasks[self.task_index], data)

    @property
    def finished(self) -> bool:
        """All planned subtasks' phases have run (the hand has retreated from the last one)."""
        return self.holding

    def _hold(self, data) -> Phase:
        """After the last subtask: hold the current pose."""
        pos, rot = self.ik.site_pose(data)
        self.holding = True
        self.queue = [Phase(lambda d: (pos, rot), OPEN, lambda d, e: False, 10**9)]
        return self.queue[0]


def sample_subtasks(rng: np.random.Generator, n: int = 4) -> list[str]:
    """n distinct scripted subtasks in a random order."""
    return [FEASIBLE_SUBTASKS[i] for i in rng.permutation(len(FEASIBLE_SUBTASKS))[:n]]


def run_episode(env: KitchenEnv, seed: int, n_subtasks: int = 4) -> dict[str, np.ndarray | list[str]]:
    """One expert episode from ``env.reset(seed=seed)``; the subtask order is drawn from the same seed.

    Returns the per-step ``obs`` (observation before each action), ``action`` and ``state`` arrays, the
    planned ``tasks`` and the ``completed`` subtasks in the order the env counted them. The episode stops
    after the planned subtasks are done and the hand has retreated, or after the env's step limit.
    """
    rng = np.random.default_rng([seed, 1])
    tasks = sample_subtasks(rng, n_subtasks)
    obs, info = env.reset(seed=seed)
    expert = KitchenExpert(env, tasks)
    observations, actions, states = [], [], []
    while True:
        action = expert.act(obs)
        observations.append(obs)
        states.append(env.get_state())
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated or (expert.finished and info["n_completed"] >= len(tasks)):
            break
    return {"obs": np.asarray(observations), "action": np.asarray(actions), "state": np.asarray(states),
            "tasks": tasks, "completed": info["completed_subtasks"]}
