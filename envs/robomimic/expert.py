"""Scripted experts for Lift, PickPlaceCan and ToolHang, using privileged simulator state.

Each expert is a generator of OSC_POSE delta actions (position delta, world-frame axis-angle
delta, gripper: -1 open, +1 closed). It drives the gripper through waypoints with a
proportional pose servo; the waypoints and choices are drawn from a seeded RNG so that the
demonstrations are not one trajectory. ``rollout_expert`` runs one episode and records what a
robomimic dataset holds, plus the controller's absolute target pose after every step (the
action of the ``abs_action`` datasets).

    python -m envs.robomimic.expert --task lift --episodes 50 [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from envs.robomimic.env import RobomimicEnv, make_env_meta, task_spec

OPEN, CLOSED = -1.0, 1.0
POS_SCALE, ROT_SCALE = 0.05, 0.5  # OSC_POSE output_max for position (m) and rotation (rad)


def rot_z(angle: float) -> np.ndarray:
    return Rotation.from_euler("z", angle).as_matrix()


def yaw_of(mat: np.ndarray) -> float:
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


def wrap_angle(angle: float, period: float) -> float:
    """``angle`` wrapped into [-period / 2, period / 2)."""
    return float((angle + period / 2) % period - period / 2)


def servo_action(pos, mat, target_pos, target_mat, gripper: float, gain: float = 1.0) -> np.ndarray:
    """Proportional OSC_POSE delta action moving the pose (pos, mat) towards the target."""
    dpos = gain * (np.asarray(target_pos) - pos) / POS_SCALE
    drot = Rotation.from_matrix(target_mat @ mat.T).as_rotvec() / ROT_SCALE
    return np.concatenate([np.clip(dpos, -1, 1), np.clip(drot, -1, 1), [gripper]])


class Expert:
    """Base class: waypoint servoing on the gripper site, with helpers to read body poses."""

    def __init__(self, env: RobomimicEnv, rng: np.random.Generator):
        self.env = env
        self.rng = rng
        self.base = env.env
        self.robot = self.base.robots[0]

    # -- privileged state -------------------------------------------------------------------
    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        data, site = self.base.sim.data, self.robot.eef_site_id
        return np.array(data.site_xpos[site]), np.array(data.site_xmat[site]).reshape(3, 3)

    def body_pose(self, body_id: int) -> tuple[np.ndarray, np.ndarray]:
        data = self.base.sim.data
        return np.array(data.body_xpos[body_id]), np.array(data.body_xmat[body_id]).reshape(3, 3)

    def gripper_width(self) -> float:
        qpos = self.base.sim.data.qpos[self.robot._ref_gripper_joint_pos_indexes]
        return float(qpos[0] - qpos[1])

    # -- motion primitives (generators of actions) ------------------------------------------
    def move_to(self, target_pos, target_mat, gripper: float, tol: float = 0.01, max_steps: int = 80, gain=1.0):
        """Servo until the gripper site is within ``tol`` metres of ``target_pos``."""
        for _ in range(max_steps):
            pos, mat = self.eef_pose()
            if np.linalg.norm(target_pos - pos) < tol:
                return
            yield servo_action(pos, mat, target_pos, target_mat, gripper, gain)

    def carry_to(self, body_id: int, target_pos, target_mat, tol: float = 0.01, max_steps: int = 120, gain=1.0):
        """Servo a grasped body's position to ``target_pos`` (closed loop on the body, so a slip
        in the fingers does not shift where it ends up), keeping the wrist at ``target_mat``."""
        for _ in range(max_steps):
            pos, mat = self.eef_pose()
            body_pos, _ = self.body_pose(body_id)
            if np.linalg.norm(target_pos - body_pos) < tol:
                return
            yield servo_action(pos, mat, pos + target_pos - body_pos, target_mat, CLOSED, gain)

    def carry_pose(self, body_id: int, point, target_pos, target_mat, tol=0.005, rot_tol=0.05, max_steps=120, gain=1.0):
        """Servo a grasped body's full pose: its local ``point`` to ``target_pos`` and its
        orientation to ``target_mat``, through the gripper-in-body transform measured each step."""
        for _ in range(max_steps):
            pos, mat = self.eef_pose()
            body_pos, body_mat = self.body_pose(body_id)
            point_err = np.linalg.norm(target_pos - (body_pos + body_mat @ point))
            rot_err = np.linalg.norm(Rotation.from_matrix(target_mat @ body_mat.T).as_rotvec())
            if point_err < tol and rot_err < rot_tol:
                return
            grip_rot = body_mat.T @ mat  # gripper orientation in the body frame
            grip_pos = body_mat.T @ (pos - body_pos)
            target_origin = target_pos - target_mat @ point
            yield servo_action(pos, mat, target_origin + target_mat @ grip_pos, target_mat @ grip_rot, CLOSED, gain)

    def top_down_grasp(self, axis: np.ndarray, turn_after: float = 0.0) -> np.ndarray:
        """Downward-pointing gripper orientation with the fingers across the horizontal ``axis``.

        Of the two such orientations (half a turn apart) it picks the one whose wrist joint
        stays furthest from its limits, both at the grasp and after a further yaw of ``turn_after``.
        """
        _, eef_mat = self.eef_pose()
        across = np.cross([0.0, 0.0, 1.0], axis)
        turn = wrap_angle(np.arctan2(across[1], across[0]) - np.arctan2(eef_mat[1, 0], eef_mat[0, 0]), np.pi)
        wrist = self.base.sim.data.qpos[self.robot._ref_joint_pos_indexes[-1]]
        low, high = self.base.sim.model.jnt_range[self.robot._ref_joint_indexes[-1]]

        def margin(yaw):  # the wrist joint turns against world yaw while the gripper points down
            return min(min(q - low, high - q) for q in (wrist - yaw, wrist - yaw - turn_after))

        turn = max((turn, turn - np.pi if turn > 0 else turn + np.pi), key=margin)
        return rot_z(turn) @ eef_mat

    def hold(self, target_pos, target_mat, gripper: float, steps: int):
        for _ in range(steps):
            pos, mat = self.eef_pose()
            yield servo_action(pos, mat, target_pos, target_mat, gripper)

    def plan(self):
        raise NotImplementedError


class LiftExpert(Expert):
    """Top-down grasp of the cube with the fingers square to its faces, then lift."""

    def plan(self):
        cube_id = self.base.cube_body_id
        cube_pos, cube_mat = self.body_pose(cube_id)
        _, eef_mat = self.eef_pose()
        # The cube is symmetric under quarter turns: turn the wrist by the smallest such angle.
        turn = wrap_angle(yaw_of(cube_mat) - yaw_of(eef_mat), np.pi / 2) + self.rng.uniform(-0.1, 0.1)
        grasp_mat = rot_z(turn) @ eef_mat
        offset = np.array([*self.rng.uniform(-0.005, 0.005, 2), self.rng.uniform(-0.005, 0.003)])
        above = cube_pos + offset + [0, 0, self.rng.uniform(0.06, 0.12)]
        yield from self.move_to(above, grasp_mat, OPEN, tol=0.02)
        yield from self.move_to(cube_pos + offset, grasp_mat, OPEN, tol=0.005, max_steps=60, gain=0.6)
        grasp_pos, _ = self.eef_pose()
        yield from self.hold(grasp_pos, grasp_mat, CLOSED, steps=int(self.rng.integers(6, 10)))
        lift = grasp_pos + [*self.rng.uniform(-0.03, 0.03, 2), self.rng.uniform(0.12, 0.2)]
        yield from self.move_to(lift, grasp_mat, CLOSED, tol=0.005, max_steps=200, gain=0.5)
        yield from self.hold(lift, grasp_mat, CLOSED, steps=200)


class CanExpert(Expert):
    """Top-down grasp of the upright can, carry above the bin walls, lower into the target
    quadrant, release and withdraw (success needs the gripper away from the can)."""

    CARRY_HEIGHT = 1.0  # can centre while carrying, clear of both bins' walls
    RELEASE_HEIGHT = 0.91  # can centre when released, just above the goal bin's floor
    # Release points inside the goal quadrant (x 0.10-0.295, y 0.28-0.525), on the side near
    # the robot: its far corner is at the edge of the Panda's reach.
    RELEASE_X, RELEASE_Y = (0.13, 0.19), (0.31, 0.37)

    def plan(self):
        can_id = self.base.obj_body_id["Can"]
        can_pos, _ = self.body_pose(can_id)
        _, eef_mat = self.eef_pose()
        grasp_mat = rot_z(self.rng.uniform(-0.6, 0.6)) @ eef_mat  # the can is round: any wrist yaw
        offset = np.array([*self.rng.uniform(-0.006, 0.006, 2), self.rng.uniform(-0.01, 0.01)])
        yield from self.move_to(can_pos + offset + [0, 0, self.rng.uniform(0.08, 0.14)], grasp_mat, OPEN, tol=0.02)
        yield from self.move_to(can_pos + offset, grasp_mat, OPEN, tol=0.006, max_steps=60, gain=0.6)
        grasp_pos, _ = self.eef_pose()
        yield from self.hold(grasp_pos, grasp_mat, CLOSED, steps=int(self.rng.integers(6, 10)))

        goal = np.array([self.rng.uniform(*self.RELEASE_X), self.rng.uniform(*self.RELEASE_Y)])
        can_pos, _ = self.body_pose(can_id)
        carry = self.CARRY_HEIGHT + self.rng.uniform(-0.01, 0.03)
        yield from self.carry_to(can_id, np.array([*can_pos[:2], carry]), grasp_mat, tol=0.03)
        # Rotate the wrist on the way when it helps variety; the can does not care.
        carry_mat = rot_z(self.rng.uniform(-0.3, 0.3)) @ grasp_mat
        yield from self.carry_to(can_id, np.array([*goal, carry]), carry_mat, tol=0.02, max_steps=150)
        yield from self.carry_to(can_id, np.array([*goal, self.RELEASE_HEIGHT]), carry_mat, tol=0.015, max_steps=60)
        release_pos, _ = self.eef_pose()
        yield from self.hold(release_pos, carry_mat, OPEN, steps=int(self.rng.integers(5, 9)))
        yield from self.hold(release_pos + [0, 0, self.rng.uniform(0.08, 0.15)], carry_mat, OPEN, steps=200)


class ToolHangExpert(Expert):
    """Insert the frame into the stand, then hang the tool's ring on the frame's hook.

    Frame: top-down grasp of its grip while it lies flat, lift, turn it upright (the hand ends
    horizontal), lower the tip through the stand's mount to just above the base plate (the
    success check wants it within ~1.7 cm), release and back off.
    Tool: rise above the frame, top-down grasp of the tool's grip, carry it flat with the
    handle pointing outward along the hook bar, lower the ring over the hook's prong to just
    above the bar and release; gravity swings the ring onto the bar, and a push on the grip
    frees a ring that stops half-way. Threading the ring along the bar jams (1.94 cm opening vs
    1.96 cm of bar and prong), hooking does not.
    """

    # Points in the frame's body coordinates (rod along local z, hook bar along local -x).
    FRAME_GRIP = np.array([0.0437, 0.0, 0.0525])
    FRAME_TIP = np.array([0.0437, 0.0, -0.1344])
    FRAME_PRONG_TOP = np.array([-0.0437, 0.0, 0.102])
    TOOL_RING = np.array([-0.0935, 0.0, 0.0])  # ring centre in the tool's body coordinates
    MOUNT_TOP = 0.961  # top of the stand's mount
    BASE_PLATE_TOP = 0.811  # top of the stand's base plate
    # Where the ring's centre is let go, in the frame's body coordinates: on the prong's axis, low
    # enough for the prong to be through the ring and its underside just above the bar. Dropped
    # from above the prong instead, the tool (six times the frame's mass) can come down hard
    # enough to jerk the frame over in its mount.
    RING_RELEASE = FRAME_PRONG_TOP - [0.0, 0.0, 0.006]
    CLEAR_HEIGHT = 1.22  # gripper height when travelling over the frame
    PUSHES = 3  # pushes on a tool that has not swung onto the bar, at most

    def plan(self):
        _, self.home_mat = self.eef_pose()  # pointing down, as at reset
        yield from self.insert_frame()
        yield from self.hang_tool()

    def insert_frame(self):
        frame_id = self.base.obj_body_id["frame"]
        frame_pos, frame_mat = self.body_pose(frame_id)
        grip = frame_pos + frame_mat @ self.FRAME_GRIP
        grasp_mat = self.top_down_grasp(frame_mat[:, 2])
        yield from self.move_to(grip + [0, 0, self.rng.uniform(0.08, 0.12)], grasp_mat, OPEN, tol=0.015)
        # The frame is placed above the table at reset and settles meanwhile: look again.
        frame_pos, frame_mat = self.body_pose(frame_id)
        grip = frame_pos + frame_mat @ self.FRAME_GRIP
        grip_offset = (np.array([0, 0, self.rng.uniform(-0.004, 0.002)])
                       + frame_mat[:, 2] * self.rng.uniform(-0.01, 0.01))
        yield from self.move_to(grip + grip_offset, grasp_mat, OPEN, tol=0.005, max_steps=60, gain=0.6)
        grasp_pos, _ = self.eef_pose()
        yield from self.hold(grasp_pos, grasp_mat, CLOSED, steps=int(self.rng.integers(8, 12)))

        frame_pos, frame_mat = self.body_pose(frame_id)
        lifted = frame_pos + frame_mat @ self.FRAME_GRIP + [0, 0, self.rng.uniform(0.3, 0.36)]
        yield from self.carry_pose(frame_id, self.FRAME_GRIP, lifted, frame_mat, tol=0.03, rot_tol=0.2)
        # Upright (local z up), square to the mount: the 7.5 mm rod has 0.25 mm of play in the
        # 8 mm mount, so it only goes in within a few degrees of the mount's axes. The hook bar
        # points along +x and the hand ends horizontal, pointing along -y, from where it can back
        # off towards the robot; other headings drive the wrist or the elbow into their limits.
        yaw = np.pi + self.rng.uniform(-0.01, 0.01)
        upright = rot_z(yaw)
        yield from self.carry_pose(frame_id, self.FRAME_GRIP, lifted, upright, tol=0.03, rot_tol=0.08, max_steps=100)
        mount = np.array(self.base.sim.data.geom_xpos[self.base.sim.model.geom_name2id("stand_hole_vis_vis")])
        above = np.array([mount[0], mount[1], self.MOUNT_TOP + self.rng.uniform(0.03, 0.06)])
        yield from self.carry_pose(frame_id, self.FRAME_TIP, above, upright, tol=0.004, rot_tol=0.03, max_steps=150)
        # Down to the plate before letting go: a frame dropped the last centimetre can land tilted
        # against the mount's walls and lean further while the tool is hung, until it no longer
        # counts as assembled.
        inserted = np.array([mount[0], mount[1], self.BASE_PLATE_TOP + 0.001])
        yield from self.carry_pose(frame_id, self.FRAME_TIP, inserted, upright, tol=0.004, max_steps=120, gain=0.5)
        pos, mat = self.eef_pose()
        yield from self.hold(pos, mat, OPEN, steps=int(self.rng.integers(6, 10)))
        # Back the fingers off the grip along the hand (one finger is under the hook bar), then rise.
        backed = pos - mat[:, 2] * self.rng.uniform(0.06, 0.08)
        yield from self.move_to(backed, mat, OPEN, tol=0.01, max_steps=40)

    def hang_tool(self):
        tool_id, frame_id = self.base.obj_body_id["tool"], self.base.obj_body_id["frame"]
        pos, _ = self.eef_pose()
        yield from self.move_to(np.array([*pos[:2], self.CLEAR_HEIGHT]), self.home_mat, OPEN, tol=0.03)
        _, frame_mat = self.body_pose(frame_id)
        hook_out = -frame_mat[:, 0]  # the bar points outward along the frame's local -x
        # Carry the tool flat with its handle (ring -> grip, the tool's +x) pointing outward along the bar.
        carry_mat = rot_z(np.arctan2(hook_out[1], hook_out[0]) + self.rng.uniform(-0.15, 0.15))
        yield from self.grasp_tool(tool_id, carry_mat)
        yield from self.hook_ring(tool_id, frame_id, carry_mat)

    def grasp_tool(self, tool_id: int, carry_mat: np.ndarray):
        """Top-down grasp of the tool's grip, at a wrist yaw from which it can turn to ``carry_mat``."""
        tool_pos, tool_mat = self.body_pose(tool_id)
        turn = wrap_angle(yaw_of(carry_mat) - yaw_of(tool_mat), 2 * np.pi)
        grasp_mat = self.top_down_grasp(tool_mat[:, 0], turn_after=turn)
        yield from self.move_to(np.array([*tool_pos[:2], self.CLEAR_HEIGHT]), grasp_mat, OPEN, tol=0.03, max_steps=100)
        yield from self.move_to(tool_pos + [0, 0, self.rng.uniform(0.06, 0.1)], grasp_mat, OPEN, tol=0.015)
        tool_pos, tool_mat = self.body_pose(tool_id)
        offset = tool_mat[:, 0] * self.rng.uniform(-0.012, 0.012) + [0, 0, self.rng.uniform(-0.004, 0.002)]
        yield from self.move_to(tool_pos + offset, grasp_mat, OPEN, tol=0.005, max_steps=60, gain=0.6)
        grasp_pos, _ = self.eef_pose()
        yield from self.hold(grasp_pos, grasp_mat, CLOSED, steps=int(self.rng.integers(8, 12)))

    def hook_ring(self, tool_id: int, frame_id: int, carry_mat: np.ndarray):
        """Carry the grasped tool over the hook, lower its ring onto the prong and let go."""
        frame_pos, frame_mat = self.body_pose(frame_id)
        prong_top = frame_pos + frame_mat @ self.FRAME_PRONG_TOP
        # Lift straight up to well above the frame before turning the tool and moving over the
        # hook: lower down, the ring swings round while the tool turns, hits the bar and twists the
        # frame in its mount, and the prong is then no longer where the ring is lowered to.
        travel_height = prong_top[2] + self.rng.uniform(0.08, 0.11)
        tool_pos, tool_mat = self.body_pose(tool_id)
        lifted = np.array([*tool_pos[:2], travel_height])
        yield from self.carry_pose(tool_id, np.zeros(3), lifted, tool_mat, tol=0.03, rot_tol=0.3)
        # Centre the ring over the prong to a few millimetres before going down: the 2.1 cm ring
        # clears the 0.75 cm prong by only ~5 mm on each side.
        release = frame_pos + frame_mat @ self.RING_RELEASE
        over_prong = np.array([*release[:2], travel_height])
        yield from self.carry_pose(tool_id, self.TOOL_RING, over_prong, carry_mat, tol=0.004, rot_tol=0.05,
                                   max_steps=150)
        yield from self.carry_pose(tool_id, self.TOOL_RING, release, carry_mat, tol=0.003, max_steps=100, gain=0.6)
        pos, mat = self.eef_pose()
        yield from self.hold(pos, mat, OPEN, steps=int(self.rng.integers(6, 10)))
        # Back off and let the tool swing down. The ring sometimes stops half-way, caught tilted
        # across the prong; a push on the grip sets it going again.
        for _ in range(self.PUSHES):
            yield from self.hold(pos + [0, 0, 0.06], mat, OPEN, steps=int(self.rng.integers(25, 35)))
            if self.env.is_success() or not self.ring_on_hook(tool_id, frame_id):
                break
            yield from self.push_tool_inboard(tool_id, frame_id, mat)
        yield from self.hold(pos + [0, 0, 0.06], mat, OPEN, steps=300)

    def ring_on_hook(self, tool_id: int, frame_id: int) -> bool:
        """Whether the tool's ring is around the hook (not on the table, say)."""
        tool_pos, tool_mat = self.body_pose(tool_id)
        frame_pos, frame_mat = self.body_pose(frame_id)
        ring = tool_pos + tool_mat @ self.TOOL_RING
        return bool(np.linalg.norm(ring - frame_pos - frame_mat @ self.FRAME_PRONG_TOP) < 0.03)

    def push_tool_inboard(self, tool_id: int, frame_id: int, mat: np.ndarray):
        """With the fingers closed, come down outboard of the tool's grip and push it towards the
        frame's rod, then rise clear."""
        tool_pos, _ = self.body_pose(tool_id)
        _, frame_mat = self.body_pose(frame_id)
        inboard = frame_mat[:, 0] * [1, 1, 0]
        inboard /= np.linalg.norm(inboard)
        start = tool_pos - inboard * self.rng.uniform(0.045, 0.055)
        yield from self.move_to(start + [0, 0, 0.1], mat, CLOSED, tol=0.01, max_steps=60)
        yield from self.move_to(start, mat, CLOSED, tol=0.01, max_steps=60)
        yield from self.move_to(tool_pos, mat, CLOSED, tol=0.005, max_steps=40, gain=0.4)
        pos, _ = self.eef_pose()
        yield from self.move_to(pos - inboard * 0.03 + [0, 0, 0.1], mat, CLOSED, tol=0.02, max_steps=40)


EXPERTS = {"lift": LiftExpert, "can": CanExpert, "toolhang": ToolHangExpert}


@dataclass
class Episode:
    """One expert rollout, in robomimic's per-demo layout (obs[t] is the observation before actions[t])."""

    obs: list[dict] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    abs_actions: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    final_obs: dict | None = None
    success: bool = False

    def __len__(self) -> int:
        return len(self.actions)


def controller_target(env: RobomimicEnv, gripper: float) -> np.ndarray:
    """The OSC controller's absolute goal after a step: position, axis-angle, gripper (7-D)."""
    controller = env.env.robots[0].controller
    rotvec = Rotation.from_matrix(controller.goal_ori).as_rotvec()
    return np.concatenate([controller.goal_pos, rotvec, [gripper]])


def rollout_expert(env: RobomimicEnv, task: str, seed: int, record_obs: bool = True) -> Episode:
    """Reset ``env`` with ``seed`` and run ``task``'s expert until success or the horizon.

    The episode stops at the first successful step, as robomimic's ph demos do.
    """
    obs = env.reset(seed=seed)
    expert = EXPERTS[task](env, np.random.default_rng(seed))
    actions = expert.plan()
    episode = Episode()
    for _ in range(task_spec(task).horizon):
        action = next(actions, None)
        if action is None:
            break
        state = env.get_state()
        next_obs, reward, _, info = env.step(action)
        if record_obs:
            episode.obs.append(obs)
        episode.states.append(state)
        episode.actions.append(action)
        episode.abs_actions.append(controller_target(env, action[-1]))
        episode.rewards.append(reward)
        obs = next_obs
        if info["is_success"]:
            episode.success = True
            break
    episode.final_obs = obs
    return episode


# Each worker process of ``expert_episodes`` holds one env (robosuite envs cannot be pickled, and one
# rendering context per process is what MuJoCo's offscreen renderer supports).
_WORKER_ENV: RobomimicEnv | None = None


def _start_worker(task: str, images: bool) -> None:
    global _WORKER_ENV
    _WORKER_ENV = RobomimicEnv(make_env_meta(task, image=images))


def _rollout_in_worker(seed: int, task: str, record_obs: bool) -> Episode:
    return rollout_expert(_WORKER_ENV, task, seed, record_obs)


def expert_episodes(
    task: str, seeds: Iterable[int], images: bool = False, record_obs: bool = True, workers: int = 1
) -> Iterator[Episode]:
    """The expert's episodes for ``seeds``, in the order of ``seeds``, rolled out in ``workers`` processes.

    An episode depends only on its seed, so the result is the same for any number of workers. The
    workers run ahead of the consumer; stopping the iteration early terminates them, and the episodes
    they finished ahead are dropped.
    """
    if workers < 1:
        raise ValueError(f"expert_episodes: workers must be >= 1; got {workers}")
    if workers == 1:
        env = RobomimicEnv(make_env_meta(task, image=images))
        for seed in seeds:
            yield rollout_expert(env, task, seed, record_obs)
        return
    # spawn, not fork: a forked child would share the parent's MuJoCo/EGL state.
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (task, images)) as pool:
        yield from pool.imap(functools.partial(_rollout_in_worker, task=task, record_obs=record_obs), seeds)


def evaluate_expert(task: str, episodes: int, first_seed: int = 0, workers: int = 1) -> tuple[float, float]:
    """Success rate and mean episode length of ``task``'s expert over consecutive seeds."""
    lengths, successes = [], []
    seeds = range(first_seed, first_seed + episodes)
    for episode in expert_episodes(task, seeds, record_obs=False, workers=workers):
        successes.append(episode.success)
        lengths.append(len(episode))
    return float(np.mean(successes)), float(np.mean(lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(EXPERTS), required=True)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="first seed; episodes use consecutive seeds")
    parser.add_argument("--workers", type=int, default=1, help="processes rolling out episodes (same result)")
    args = parser.parse_args()
    start = time.time()
    rate, length = evaluate_expert(args.task, args.episodes, args.seed, args.workers)
    print(
        f"{args.task}: success {rate:.3f} over {args.episodes} seeds from {args.seed}, "
        f"mean length {length:.1f} steps, {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
