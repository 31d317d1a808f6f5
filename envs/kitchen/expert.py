"""Scripted Franka Kitchen expert: 4 of the 7 subtasks in a seeded random order, solved by damped-least-squares IK.

The expert reads the privileged sim state (``env.data``). Each subtask is a short list of phases; a phase
gives an end-effector target (position and orientation of the ``end_effector`` site, world frame), a gripper
command and a test for when it is done: approach in free space, grasp or line up, manipulate, let go, retreat.
Manipulation phases aim a little ahead of the object's current pose (a door handle 0.12-0.25 rad further
along its arc, a knob's bar 0.5 rad), so the arm drags the object along its joint. A free-space approach
ends only once the hand is also turned to the target orientation and has nearly stopped, so the slow phase
after it starts lined up.

Scripted subtasks (all 7 of the benchmark):

* microwave and hinge cabinet (one helper, ``_swing_door``): grip the door's vertical handle and pull it
  round the hinge. The hinge cabinet's goal is its right-hand door (joint ``right_hinge_cabinet`` at
  1.45 rad; the left door stays shut); the hand turns against that door so a finger pushes the handle
  along the arc, as the grip alone slips on it.
* bottom and top burner (``_turn_knob``): the closed fingers, stacked vertically, push the knob's bar round
  its axis from the bar's upper left (the knobs open clockwise, seen from the robot).
* kettle: grip the handle bar with the hand rolled 90 degrees, lift, carry to the back-left burner, set down.
* light switch and slide cabinet (``_sweep``): closed fingers push the lever left / the door right.

``sample_subtasks`` draws the episode's subtasks from all 7 by default (``subtasks`` narrows the set, e.g. to
the 4 the earlier expert scripted) in a random order, redrawn until it respects ``ORDER_CONSTRAINTS``: an
open hinge door blocks the way to the slide cabinet's handle and the top burner's knob, so when an episode
has either of them, the hinge cabinet comes after it.

Turning an end-effector target into an env action (see ``envs.kitchen.env`` for the action semantics):
an IK step gives joint targets ``q + dq``; the position actuators have no gravity compensation and heavy
joint damping, so the commanded joint position adds ``qfrc_bias / kp`` (gravity) and ``damping * dq / (kp dt)``
(velocity feed-forward); the action is that command minus the observed joints, divided by 0.16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from envs.kitchen.env import ACTION_SCALE, CONTROL_DT, SUBTASKS, KitchenEnv

N_ARM = 7
# (first, then): when an episode has both subtasks, ``first`` comes first. The open hinge door stands out
# 0.35 m from the cabinet, 2.4-2.8 m up: its handle then hangs in front of the slide cabinet's handle and its
# bottom edge just above the top burner's knob, and the expert cannot reach either past them.
ORDER_CONSTRAINTS = (("slide cabinet", "hinge cabinet"), ("top burner", "hinge cabinet"))

# gripper pointing forward (+y), fingers opening along world x; columns are the site's x, y, z axes
FORWARD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# the same, rolled 90 degrees about the approach axis so the fingers open vertically (kettle handle bar);
# this sense of roll turns joint 7 away from its upper limit, where the arm starts
FORWARD_ROLLED = Rotation.from_rotvec([0.0, -np.pi / 2, 0.0]).as_matrix() @ FORWARD
OPEN, CLOSE = 1.0, -1.0
FAST = 0.08  # metres per step in free space (1 m/s); contact phases use Phase's default 0.03
TRANSIT_POSTURE_GAIN = 0.3  # free-space moves also restore the start posture, so every subtask starts alike
# a free-space approach ends within this angle (rad) of the target orientation and below this hand speed
# (m/s): arriving still turning or moving, the hand drifts into the handle or bar it lines up with next
ARRIVE_ROT_TOL = 0.3
ARRIVE_SPEED = 0.3


def rot_z(angle: float) -> np.ndarray:
    return Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix()


# burner knobs: the hand is rolled upright (its 20 cm width vertical, clear of the light switch lever above
# and left of the bottom knob) and points 0.7 rad right of forward (a hand pointing straight ahead at knob
# height needs joint 6 past its limit; turned this far, the upright hand also stays left of an open hinge
# cabinet door).
KNOB_HAND = rot_z(-0.7) @ FORWARD_ROLLED
KNOB_PUSH_HEIGHT = 0.025  # fingers' centre above the knob's axis: the whole finger pair pushes above it
KNOB_PUSH_SIDE = 0.045  # from the bar's centre line to the site, which sits left of the slanted fingertips
KNOB_PUSH_DEPTH = 0.04  # site in front of the bar's centre; the fingertips reach 5 cm past the site


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

    def site_speed(self, data: mujoco.MjData) -> float:
        """Linear speed of the site in m/s (from the arm's joint velocities)."""
        return float(np.linalg.norm(self._jacobian(data)[:3] @ data.qvel[:N_ARM]))

    def action(self, data: mujoco.MjData, q_observed: np.ndarray, pos: np.ndarray, rot: np.ndarray,
               grip: float, max_step: float = 0.03, posture_gain: float = 0.05, homing: float = 0.0) -> np.ndarray:
        """Action towards the site pose (pos, rot), moving at most ``max_step`` metres this step and pulling
        the arm towards its start posture by ``posture_gain`` of the difference in the task's null space and
        by ``homing`` of it in all joints (which gives up some of the pose target)."""
        q = data.qpos[:N_ARM].copy()
        if self.rest is None:
            self.rest = q.copy()
        cur_pos, cur_rot = self.site_pose(data)
        err_pos = _clip_norm(pos - cur_pos, max_step)
        err_rot = _clip_norm(Rotation.from_matrix(rot @ cur_rot.T).as_rotvec(), self.max_rot_step)
        dq = self._joint_step(q, self._jacobian(data), np.concatenate([err_pos, err_rot]), posture_gain)
        dq = np.clip(q + dq + homing * (self.rest - q), np.minimum(q, self.lower), np.maximum(q, self.upper)) - q
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
    a step limit, a speed (metres per step; free-space transits run at ``FAST``) and two options for
    free-space moves: a pull back to the start posture and, for approaches, a stricter exit test."""

    target: Callable[[mujoco.MjData], tuple[np.ndarray, np.ndarray]]
    grip: float
    done: Callable[[mujoco.MjData, float], bool]  # (data, position error) -> finished
    max_steps: int = 60
    speed: float = 0.03
    homing: float = 0.0  # share of the way back to the start posture per step, in all joints
    arrive: bool = False  # also done only when turned to the target and nearly stopped (ARRIVE_*)


def reached(tol: float) -> Callable[[mujoco.MjData, float], bool]:
    return lambda data, err: err < tol


def approach(target: Callable[[mujoco.MjData], tuple[np.ndarray, np.ndarray]], grip: float) -> Phase:
    """A free-space move to a pose in front of the next contact."""
    return Phase(target, grip, reached(0.03), speed=FAST, arrive=True)


class SubtaskScripts:
    """Phase lists for each subtask, built from the kitchen's geometry (site and joint names)."""

    def __init__(self, model: mujoco.MjModel):
        def site(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)

        def joint_id(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        def qadr(name):
            return model.jnt_qposadr[joint_id(name)]

        self.site, self.joint_id, self.qadr = site, joint_id, qadr
        self.ee = site("end_effector")

    def phases(self, task: str, data: mujoco.MjData) -> list[Phase]:
        return getattr(self, "_" + task.replace(" ", "_"))(data)

    # -- helpers ---------------------------------------------------------------------------------------
    def _site_pos(self, data, name) -> np.ndarray:
        return data.site_xpos[self.site(name)].copy()

    def _retreat(self, rot: np.ndarray | None = None, back: float = 0.12, down: float = 0.0,
                 grip: float = OPEN, homing: float = 0.0, max_steps: int = 12) -> Phase:
        """Pull the hand back (-y) and down from wherever it is, keeping the fingers' setting and turning the
        hand to ``rot`` (default: the orientation it has when the retreat starts); ``homing``: see Phase."""
        anchor = {}

        def target(data):
            if "pos" not in anchor:
                anchor["pos"] = data.site_xpos[self.ee].copy() + np.array([0.0, -back, -down])
                anchor["rot"] = data.site_xmat[self.ee].reshape(3, 3).copy() if rot is None else rot
            return anchor["pos"], anchor["rot"]

        return Phase(target, grip, reached(0.03), max_steps, FAST, homing)

    # -- subtasks --------------------------------------------------------------------------------------
    def _microwave(self, data) -> list[Phase]:
        """Grip the handle and pull the door round its hinge (opening is a negative angle), turning the hand
        half as far as the door: that keeps the grip."""
        # counted at -0.45; the arm's reach ends near -0.55
        return self._swing_door(data, "microwave", "microhandle_site", lead=-0.12, open_angle=-0.5,
                                hand_yaw=lambda angle: 0.5 * angle, grip_width=0.04, pull_steps=50,
                                retreat=[self._retreat(rot_z(-0.35) @ FORWARD)])

    def _hinge_cabinet(self, data) -> list[Phase]:
        """Grip the right door's handle and pull the door open (a positive angle; the benchmark's goal is this
        door at 1.45 rad). The grip alone slips on this stiffer door, so the hand turns against the door
        (yaw -0.5 x the door's angle) and its finger pushes the handle along the arc; once the door is 1.2
        rad round from the hand the hand turns with it, or the door's inner face would hit the hand."""
        # counted above 1.15 rad. The open door is a wall from the cabinet to 0.35 m in front of the robot,
        # 2.4-2.8 m up, between the hand and everything left of it: the hand retreats clear of the handle,
        # then down below the door, there also unwinding the arm (the pull swings the elbow round so far that
        # the null-space pull of later moves cannot bring back the posture the kettle's grasp needs).
        return self._swing_door(data, "right_hinge_cabinet", "hinge_site2", lead=0.25, open_angle=1.25,
                                hand_yaw=lambda angle: angle - min(1.5 * angle, 1.2), grip_width=0.05,
                                pull_steps=40,
                                retreat=[self._retreat(FORWARD), self._retreat(FORWARD, back=0.0, down=0.25,
                                                                               homing=0.2, max_steps=7)])

    def _swing_door(self, data, joint: str, handle_site: str, lead: float, open_angle: float,
                    hand_yaw: Callable[[float], float], grip_width: float, pull_steps: int,
                    retreat: list[Phase]) -> list[Phase]:
        """Grip a vertical door handle and pull it round the door's hinge until the door passes ``open_angle``.
        The pull aims ``lead`` rad further along the arc than the door is (the sign of ``lead`` is the opening
        direction), with the hand's yaw ``hand_yaw(angle)`` at that angle. ``grip_width``: the fingers' opening
        (both joints together) once they are closed on the handle."""
        hinge = self.qadr(joint)
        centre = data.xanchor[self.joint_id(joint)][:2].copy()  # the hinge axis (x, y)
        handle0 = self._site_pos(data, handle_site)
        offset = rot_z(-data.qpos[hinge])[:2, :2] @ (handle0[:2] - centre)  # handle at door angle 0

        def handle_at(angle, back):
            xy = centre + rot_z(angle)[:2, :2] @ offset
            normal = rot_z(angle)[:2, :2] @ np.array([0.0, -1.0])
            return np.array([*(xy + back * normal), handle0[2]])

        def in_front(data):
            return handle_at(data.qpos[hinge], 0.08), rot_z(data.qpos[hinge]) @ FORWARD

        def grasp(data):
            return handle_at(data.qpos[hinge], 0.0), rot_z(data.qpos[hinge]) @ FORWARD

        def pull(data):
            angle = data.qpos[hinge] + lead
            return handle_at(angle, -0.01), rot_z(hand_yaw(angle)) @ FORWARD

        return [approach(in_front, OPEN), Phase(grasp, OPEN, reached(0.015), 20),
                Phase(grasp, CLOSE, lambda d, e: d.qpos[7] + d.qpos[8] < grip_width, 6),
                Phase(pull, CLOSE, lambda d, e: np.sign(lead) * (d.qpos[hinge] - open_angle) > 0, pull_steps),
                Phase(pull, OPEN, lambda d, e: d.qpos[7] > 0.03, 6),
                *retreat]

    def _bottom_burner(self, data) -> list[Phase]:
        return self._turn_knob(data, "knob2_site", "knob_Joint_2")

    def _top_burner(self, data) -> list[Phase]:
        return self._turn_knob(data, "knob4_site", "knob_Joint_4")

    def _turn_knob(self, data, knob_site: str, joint: str) -> list[Phase]:
        """Push the knob's bar round with the closed fingers: they press the bar's left side above the knob's
        axis and follow the bar's arc, aiming 0.5 rad ahead (the knob opens to negative angles, which turn
        the bar's top to the right)."""
        knob = self.qadr(joint)
        centre = self._site_pos(data, knob_site)  # the bar's centre, on the knob's axis (world y)

        def push(bar_angle):
            """Fingers' target when the bar is at ``bar_angle`` (clockwise from up, seen from the robot)."""
            up = np.array([np.sin(bar_angle), 0.0, np.cos(bar_angle)])  # along the bar, away from the axis
            left = np.array([-np.cos(bar_angle), 0.0, np.sin(bar_angle)])  # out of the bar's left side
            pos = centre + KNOB_PUSH_HEIGHT * up + KNOB_PUSH_SIDE * left
            pos[1] = centre[1] - KNOB_PUSH_DEPTH
            return pos, KNOB_HAND

        def in_front(data):  # straight in front: back along the hand's own axis is the light switch lever
            pos, rot = push(-data.qpos[knob])
            return pos - np.array([0.0, 0.1, 0.0]), rot

        return [approach(in_front, CLOSE),
                Phase(lambda d: push(-d.qpos[knob]), CLOSE, reached(0.015), 15),
                Phase(lambda d: push(0.5 - d.qpos[knob]), CLOSE, lambda d, e: d.qpos[knob] < -0.8, 25),
                self._retreat(FORWARD, grip=CLOSE)]

    def _sweep(self, start: np.ndarray, end: np.ndarray, done) -> list[Phase]:
        """Closed fingers as a paddle: come in from the robot's side to ``start``, then push to ``end``."""
        before = start + np.array([0.0, -0.12, 0.0])
        return [approach(lambda d: (before, FORWARD), CLOSE),
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
                           lambda d, e: d.qpos[joint] > 0.12)  # counted above 0.07

    def _kettle(self, data) -> list[Phase]:
        """Grip the handle bar with the fingers opening vertically, lift, carry to the back burner, set down."""
        bar = self._site_pos(data, "kettle_site") + np.array([0.0, 0.0, 0.008])
        lifted = bar + np.array([0.0, 0.0, 0.06])
        above_goal = np.array([-0.23, 0.70, lifted[2]])
        placed = np.array([-0.23, 0.70, bar[2] + 0.01])
        return [approach(lambda d: (bar + [0.0, -0.18, 0.08], FORWARD_ROLLED), OPEN),
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
        unknown = [t for t in tasks if t not in SUBTASKS]
        if unknown:
            raise ValueError(f"KitchenExpert: no script for {unknown}; the subtasks are {SUBTASKS}")
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
        return self.ik.action(data, obs[:9], pos, rot, phase.grip, phase.speed, posture_gain, phase.homing)

    def _current_phase(self, data) -> Phase:
        while True:
            if self.queue:
                phase = self.queue[0]
                if not (self._done(phase, data) or self.phase_steps >= phase.max_steps):
                    return phase
                self.queue.pop(0)
                self.phase_steps = 0
                continue
            if self.task_index + 1 >= len(self.tasks):
                return self._hold(data)
            self.task_index += 1
            self.queue = self.scripts.phases(self.tasks[self.task_index], data)

    def _done(self, phase: Phase, data) -> bool:
        pos, rot = phase.target(data)
        hand_pos, hand_rot = self.ik.site_pose(data)
        if not phase.done(data, float(np.linalg.norm(pos - hand_pos))):
            return False
        if not phase.arrive:
            return True
        turn = float(np.linalg.norm(Rotation.from_matrix(rot @ hand_rot.T).as_rotvec()))
        return turn < ARRIVE_ROT_TOL and self.ik.site_speed(data) < ARRIVE_SPEED

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


def sample_subtasks(rng: np.random.Generator, n: int = 4, subtasks: Sequence[str] = SUBTASKS) -> list[str]:
    """n distinct subtasks out of ``subtasks`` in a random order that respects ``ORDER_CONSTRAINTS`` (the
    order is redrawn until it does)."""
    if n > len(subtasks):
        raise ValueError(f"sample_subtasks: cannot draw {n} distinct subtasks from {list(subtasks)}")
    tasks = [subtasks[i] for i in rng.permutation(len(subtasks))[:n]]
    while not _feasible_order(tasks):
        tasks = [tasks[i] for i in rng.permutation(n)]
    return tasks


def parse_subtasks(text: str) -> tuple[str, ...]:
    """Comma-separated subtask names (a command-line option) -> tuple, checked against ``SUBTASKS``."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SUBTASKS]
    if unknown or not names:
        raise ValueError(f"unknown or no subtasks {unknown or text!r}; choose from {', '.join(SUBTASKS)}")
    return names


def _feasible_order(tasks: list[str]) -> bool:
    return all(tasks.index(first) < tasks.index(then) for first, then in ORDER_CONSTRAINTS
               if first in tasks and then in tasks)


def run_episode(env: KitchenEnv, seed: int, n_subtasks: int = 4, subtasks: Sequence[str] = SUBTASKS
                ) -> dict[str, np.ndarray | list[str]]:
    """One expert episode from ``env.reset(seed=seed)``; ``n_subtasks`` of ``subtasks`` (default all 7) and
    their order are drawn from the same seed.

    Returns the per-step ``obs`` (observation before each action), ``action`` and ``state`` arrays, the
    planned ``tasks`` and the ``completed`` subtasks in the order the env counted them. The episode stops
    after the planned subtasks are done and the hand has retreated, or after the env's step limit.
    """
    rng = np.random.default_rng([seed, 1])
    tasks = sample_subtasks(rng, n_subtasks, subtasks)
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
