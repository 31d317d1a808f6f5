"""Scripted experts for Lift, PickPlaceCan and ToolHang, using privileged simulator state.

Each expert is a generator of OSC_POSE delta actions (position delta, world-frame axis-angle
delta, gripper: -1 open, +1 closed). It drives the gripper through waypoints with a
proportional pose servo; the waypoints and choices are drawn from a seeded RNG so that the
demonstrations are not one trajectory. ``rollout_expert`` runs one episode and records what a
robomimic dataset holds, plus the controller's absolute target pose after every step (the
action of the ``abs_action`` datasets).

    python -m envs.robomimic.expert --task lift --episodes 50
"""

from __future__ import annotations

import argparse
import time
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


EXPERTS = {"lift": LiftExpert, "can": CanExpert}


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


def evaluate_expert(task: str, episodes: int, first_seed: int = 0) -> tuple[float, float]:
    """Success rate and mean episode length of ``task``'s expert over consecutive seeds."""
    env = RobomimicEnv(make_env_meta(task))
    lengths, successes = [], []
    for seed in range(first_seed, first_seed + episodes):
        episode = rollout_expert(env, task, seed, record_obs=False)
        successes.append(episode.success)
        lengths.append(len(episode))
    return float(np.mean(successes)), float(np.mean(lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(EXPERTS), required=True)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="first seed; episodes use consecutive seeds")
    args = parser.parse_args()
    start = time.time()
    rate, length = evaluate_expert(args.task, args.episodes, args.seed)
    print(
        f"{args.task}: success {rate:.3f} over {args.episodes} seeds from {args.seed}, "
        f"mean length {length:.1f} steps, {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
