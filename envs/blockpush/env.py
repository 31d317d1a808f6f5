"""Multimodal block pushing: IBC's `BlockPushMultimodal` task on pybullet, with a gymnasium API.

An xArm6 carries a small cylindrical pusher at a fixed height over a table. Two 4 cm blocks start in
the lower half of the workspace, two target zones sit side by side in the upper half; the task is to
push each block into a different zone. Either block may go to either zone, in either order, which makes
the expert data multimodal. Facts (sizes, masses, poses, frequencies, reward) follow
google-research/ibc `environments/block_pushing/block_pushing{,_multimodal}.py` as used by Diffusion
Policy's `BlockPushLowdimRunner`.

The 16-D observation is IBC's observation dict flattened in its order (see `OBS_LAYOUT`); the action is
a 2-D change of the effector's xy target, which the arm follows through inverse kinematics and
position control. Reward per step: +0.49 each time a block first enters a zone, replaced by 0.51 when
both blocks sit in different zones, which also ends the episode. `phase_metrics` turns an episode's
rewards into DP's p1/p2.
"""

import math
import pathlib

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
from pybullet_utils import bullet_client

ASSETS = pathlib.Path(__file__).parent / "assets"

# Timing: pybullet's default 240 Hz physics, actions at 10 Hz.
PHYSICS_HZ = 240
CONTROL_HZ = 10
SIM_STEPS_PER_ACTION = PHYSICS_HZ // CONTROL_HZ
STABILIZE_SIM_STEPS = 100

# Geometry (metres, radians).
EFFECTOR_HEIGHT = 0.06
EFFECTOR_START_XY = (0.3, -0.4)
WORKSPACE_BOUNDS = np.array([[0.15, -0.5], [0.7, 0.5]])  # rows: (x, y) min, (x, y) max
MAX_ACTION = 0.1  # IBC's action space is a box of +-0.1 m per step
BLOCK_HALF_SIZE = 0.02
ZONE_SIZE = 0.12
ZONE_HEIGHT = 0.02

# Initial-state distribution of IBC's multimodal reset.
WORKSPACE_CENTER_X = 0.4
BLOCK_CENTER_Y = -0.2
BLOCK_SHIFT_XY = (0.1, 0.15)  # uniform +- around (center x, block y)
MIN_BLOCK_X_GAP = 0.1  # IBC compares only the x coordinates of the two blocks
TARGET_CENTER_Y = 0.2
TARGET_SIDE_OFFSET_X = 0.12  # one zone left, one right of the center; which one is random
TARGET_SHIFT_XY = (0.005, 0.0075)
TARGET_YAW_SHIFT = math.pi / 30
MAX_RESET_ATTEMPTS = 1000

# Reward.
GOAL_TOLERANCE = 0.05
ENTER_REWARD = 0.49
SUCCESS_REWARD = 0.51
MAX_EPISODE_STEPS = 350

# xArm6 joint angles that put the flange at about (0.3, -0.4, 0.07) pointing down (from IBC); resetting
# to them avoids a large first IK jump.
INITIAL_JOINT_POSITIONS = (-0.92546, 0.69908, -1.10663, 0.00067, 0.39880, -4.06340)
EFFECTOR_LINK = 6
EFFECTOR_DOWN_QUAT = pybullet.getQuaternionFromEuler((0.0, math.pi, 0.0))
JOINT_MAX_FORCE = 5 * 240.0
PUSHER_MAX_FORCE = 50.0
# In IBC the pusher's head overlaps the flange's collision mesh, and that contact makes it settle about
# 1.2 cm below the flange (measured here). We mount it there and drop the contact: same reach into the
# block, no constant fight with the mount.
PUSHER_MOUNT_OFFSET = (0.0, 0.0, 0.012)

# Flattened observation: name -> size, in IBC's dict order (DP's 16-D `blockpush_lowdim`).
OBS_LAYOUT = (
    ("block_translation", 2),
    ("block_orientation", 1),
    ("block2_translation", 2),
    ("block2_orientation", 1),
    ("effector_translation", 2),
    ("effector_target_translation", 2),
    ("target_translation", 2),
    ("target_orientation", 1),
    ("target2_translation", 2),
    ("target2_orientation", 1),
)
OBS_DIM = sum(size for _, size in OBS_LAYOUT)
OBS_SLICES = {}
_start = 0
for _name, _size in OBS_LAYOUT:
    OBS_SLICES[_name] = slice(_start, _start + _size)
    _start += _size
del _start, _name, _size

# `get_state` vector: block, block2, target, target2 as (x, y, yaw), then the effector target (x, y).
STATE_DIM = 14

BLOCK_COLORS = ((1.0, 0.34, 0.35, 1.0), (0.34, 1.0, 0.35, 1.0))
ZONE_COLORS = ((0.0, 0.8, 0.0, 0.6), (0.8, 0.0, 0.0, 0.6))


def step_reward(block_xy, target_xy, entered):
    """IBC's multimodal reward for one step.

    block_xy, target_xy: (2, 2) positions of the blocks and the zones; entered: (2, 2) bool, [zone, block]
    pairs already rewarded, updated in place. Returns (reward, assignment): reward 0.49 per pair entered for
    the first time, replaced by 0.51 when each block is inside its nearest zone and the two zones differ;
    assignment = the zone of the first block in that case (0: block->target, block2->target2; 1: crossed),
    else -1.
    """
    dists = np.linalg.norm(target_xy[:, None, :] - block_xy[None, :, :], axis=-1)  # [zone, block]
    inside = dists < GOAL_TOLERANCE
    newly_entered = inside & ~entered
    entered |= inside
    reward = ENTER_REWARD * int(newly_entered.sum())
    nearest_zone = dists.argmin(axis=0)
    in_nearest = dists.min(axis=0) < GOAL_TOLERANCE
    if in_nearest.all() and nearest_zone[0] != nearest_zone[1]:
        return SUCCESS_REWARD, int(nearest_zone[0])
    return reward, -1


def phase_metrics(rewards):
    """DP's BlockPush score of one episode from its per-step rewards.

    DP sums the distinct reward values of an episode (0, 0.49, 0.51): p1 = the sum exceeds 0.4 (a block
    reached a zone), p2 = it exceeds 0.9 (both blocks in different zones after a first entry). As in DP,
    an episode whose blocks enter different zones on the same step sees only 0.51 and counts for p1 alone.
    """
    total = float(np.unique(np.asarray(rewards, dtype=np.float64)).sum())
    return {"score": total, "p1": total > 0.4, "p2": total > 0.9}


def _yaw(quat):
    return pybullet.getEulerFromQuaternion(quat)[2]


def _yaw_quat(yaw):
    return pybullet.getQuaternionFromEuler((0.0, 0.0, yaw))


class XArmPusher:
    """The xArm6 from pybullet_data with the pusher attached to its flange; moves the pusher in xy."""

    def __init__(self, client):
        self._client = client
        self.arm = client.loadURDF("xarm/xarm6_robot.urdf", [0, 0, 0], useFixedBase=True)
        self._joints = [
            j for j in range(client.getNumJoints(self.arm))
            if client.getJointInfo(self.arm, j)[2] == pybullet.JOINT_REVOLUTE
        ]
        for j in self._joints:
            client.changeDynamics(self.arm, j, linearDamping=0, angularDamping=0)
        self.reset_joints(INITIAL_JOINT_POSITIONS)
        self.pusher = client.loadURDF(str(ASSETS / "pusher.urdf"), *self._pusher_pose())
        constraint = client.createConstraint(
            parentBodyUniqueId=self.arm, parentLinkIndex=EFFECTOR_LINK,
            childBodyUniqueId=self.pusher, childLinkIndex=-1, jointType=pybullet.JOINT_FIXED,
            jointAxis=(0, 0, 0), parentFramePosition=PUSHER_MOUNT_OFFSET, childFramePosition=(0, 0, 0),
        )
        client.changeConstraint(constraint, maxForce=PUSHER_MAX_FORCE)
        # The pusher is mounted on the flange: contacts between the two would only fight the constraint.
        for link in range(-1, client.getNumJoints(self.arm)):
            client.setCollisionFilterPair(self.arm, self.pusher, link, -1, 0)
            client.setCollisionFilterPair(self.arm, self.pusher, link, 0, 0)

    def _pusher_pose(self):
        position, orientation = self._client.getLinkState(self.arm, EFFECTOR_LINK)[:2]
        return self._client.multiplyTransforms(position, orientation, PUSHER_MOUNT_OFFSET, (0, 0, 0, 1))

    def reset_joints(self, positions):
        for j, q in zip(self._joints, positions, strict=True):
            self._client.resetJointState(self.arm, j, q, targetVelocity=0.0)

    def joint_positions(self):
        return [s[0] for s in self._client.getJointStates(self.arm, self._joints)]

    def effector_xy(self):
        return np.array(self._client.getLinkState(self.arm, EFFECTOR_LINK)[0][:2])

    def solve_ik(self, xy):
        # Wide joint limits and the current wrist as rest pose keep the solution near the current one.
        return self._client.calculateInverseKinematics(
            self.arm, EFFECTOR_LINK, (xy[0], xy[1], EFFECTOR_HEIGHT), EFFECTOR_DOWN_QUAT,
            lowerLimits=[-17] * 6, upperLimits=[17] * 6, jointRanges=[17] * 6,
            restPoses=[0, 0] + self.joint_positions()[2:],
            maxNumIterations=100, residualThreshold=1e-10,
        )

    def command(self, xy):
        """Position-control the joints towards the IK solution for the effector at `xy`."""
        self._client.setJointMotorControlArray(
            self.arm, self._joints, pybullet.POSITION_CONTROL,
            targetPositions=self.solve_ik(xy), forces=[JOINT_MAX_FORCE] * len(self._joints),
        )

    def teleport(self, xy, ik_rounds=5):
        """Put the effector at `xy` at rest, bypassing the dynamics (IK is re-solved from each result)."""
        for _ in range(ik_rounds):
            self.reset_joints(self.solve_ik(xy))
        self._client.resetBasePositionAndOrientation(self.pusher, *self._pusher_pose())
        self._client.resetBaseVelocity(self.pusher, (0, 0, 0), (0, 0, 0))
        self.command(xy)


class BlockPushMultimodalEnv(gym.Env):
    """Two blocks, two zones, an xArm pusher; gymnasium API, 16-D float32 observations, 2-D actions.

    `reset(seed=...)` samples IBC's initial-state distribution; `reset(options={"state": s})` starts from a
    `get_state()` vector instead. `set_state(s)` teleports the scene in the middle of an episode and keeps
    the episode's reward bookkeeping. `info` carries the event steps DP logs (first move of each block,
    first entry of each block into each zone), DP's running phase metrics of the episode (`score`, `p1`,
    `p2`, see `phase_metrics`) and the episode's mode: `assignment` (zone of the first block at success,
    -1 before) and `first_block` (the block that entered a zone first, -1 before). A vector runner can set
    the attribute `reset_state` (a `get_state()` vector, or None) to make seeded resets start from it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, max_episode_steps=MAX_EPISODE_STEPS, render_size=(240, 320), render_mode="rgb_array"):
        self.max_episode_steps = max_episode_steps
        self.render_size = render_size
        self.render_mode = render_mode
        self.reset_state = None
        self.action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-5.0, 5.0, shape=(OBS_DIM,), dtype=np.float32)

        self._client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self._client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self._client.setGravity(0, 0, -9.8)
        self._client.setTimeStep(1.0 / PHYSICS_HZ)
        plane = self._client.loadURDF("plane.urdf", [0, 0, -0.001])
        self._robot = XArmPusher(self._client)
        # The arm's base stands on the table; its contacts there do nothing but cost time.
        for link in range(-1, self._client.getNumJoints(self._robot.arm)):
            self._client.setCollisionFilterPair(plane, self._robot.arm, -1, link, 0)
        self._zones = [self._make_zone(color) for color in ZONE_COLORS]
        self._blocks = [self._make_block(color, i) for i, color in enumerate(BLOCK_COLORS)]
        self._effector_target = np.array(EFFECTOR_START_XY, dtype=np.float64)
        self._robot.command(self._effector_target)
        self._simulate(STABILIZE_SIM_STEPS)
        # Every reset restores this snapshot, so an episode does not depend on the ones before it.
        self._snapshot = self._client.saveState()
        self._clear_episode()

    def _make_zone(self, rgba):
        # Zones are drawn only; blocks slide over them.
        half = (ZONE_SIZE / 2, ZONE_SIZE / 2, 0.0005)
        visual = self._client.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
        return self._client.createMultiBody(baseMass=0, baseVisualShapeIndex=visual, basePosition=(0, 0, -1))

    def _make_block(self, rgba, index):
        position = (WORKSPACE_CENTER_X, BLOCK_CENTER_Y + 0.1 * index, BLOCK_HALF_SIZE)
        block = self._client.loadURDF(str(ASSETS / "block.urdf"), position)
        self._client.changeVisualShape(block, -1, rgbaColor=rgba)
        return block

    # ----------------------------------------------------------------- episode
    def _clear_episode(self):
        self._steps = 0
        self._entered = np.zeros((2, 2), dtype=bool)  # [zone, block]
        self._initial_block_xy = self._block_xy()
        self._moved_step = np.full(2, -1, dtype=np.int64)
        self._entered_step = np.full((2, 2), -1, dtype=np.int64)  # [block, zone]
        self._assignment = -1
        self._rewards_seen = {0.0}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._client.restoreState(self._snapshot)
        state = (options or {}).get("state", self.reset_state)
        if state is not None:
            self._apply_state(state, where="reset (initial state)")
        else:
            self._sample_scene()
            self._effector_target = np.array(EFFECTOR_START_XY, dtype=np.float64)
            self._robot.command(self._effector_target)
        self._simulate(STABILIZE_SIM_STEPS)
        self._clear_episode()
        return self._observation(), self._info()

    def _sample_scene(self):
        rng = self.np_random
        for _ in range(MAX_RESET_ATTEMPTS):
            blocks_xy = [
                (WORKSPACE_CENTER_X + rng.uniform(-BLOCK_SHIFT_XY[0], BLOCK_SHIFT_XY[0]),
                 BLOCK_CENTER_Y + rng.uniform(-BLOCK_SHIFT_XY[1], BLOCK_SHIFT_XY[1]))
                for _ in range(2)
            ]
            if abs(blocks_xy[0][0] - blocks_xy[1][0]) > MIN_BLOCK_X_GAP:
                break
        else:
            raise RuntimeError(f"no block placement with an x gap above {MIN_BLOCK_X_GAP} m found")
        for block, xy in zip(self._blocks, blocks_xy, strict=True):
            self._place(block, xy, rng.uniform(0.0, math.pi), BLOCK_HALF_SIZE)
        side = rng.choice([-1.0, 1.0])
        for zone, sign in zip(self._zones, (side, -side), strict=True):
            xy = (WORKSPACE_CENTER_X + sign * TARGET_SIDE_OFFSET_X
                  + rng.uniform(-TARGET_SHIFT_XY[0], TARGET_SHIFT_XY[0]),
                  TARGET_CENTER_Y + rng.uniform(-TARGET_SHIFT_XY[1], TARGET_SHIFT_XY[1]))
            self._place(zone, xy, math.pi + rng.uniform(-TARGET_YAW_SHIFT, TARGET_YAW_SHIFT), ZONE_HEIGHT)

    def _place(self, body, xy, yaw, z):
        self._client.resetBasePositionAndOrientation(body, (xy[0], xy[1], z), _yaw_quat(yaw))
        self._client.resetBaseVelocity(body, (0, 0, 0), (0, 0, 0))

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"BlockPush action: expected 2 finite numbers (dx, dy), got {action!r}")
        action = np.clip(action, -MAX_ACTION, MAX_ACTION)
        self._effector_target = np.clip(self._effector_target + action, WORKSPACE_BOUNDS[0], WORKSPACE_BOUNDS[1])
        self._robot.command(self._effector_target)
        self._simulate(SIM_STEPS_PER_ACTION)
        self._steps += 1

        block_xy = self._block_xy()
        entered_before = self._entered.copy()
        reward, assignment = step_reward(block_xy, self._zone_xy(), self._entered)
        self._record_events(block_xy, self._entered & ~entered_before)
        if assignment >= 0:
            self._assignment = assignment
        self._rewards_seen.add(reward)
        terminated = reward >= SUCCESS_REWARD
        truncated = not terminated and self._steps >= self.max_episode_steps
        return self._observation(), float(reward), terminated, truncated, self._info()

    def _record_events(self, block_xy, newly_entered):
        moved = np.linalg.norm(block_xy - self._initial_block_xy, axis=-1) > 1e-3
        self._moved_step[moved & (self._moved_step < 0)] = self._steps
        self._entered_step[newly_entered.T] = self._steps

    def _info(self):
        return {
            **phase_metrics(sorted(self._rewards_seen)),
            "block_moved_step": self._moved_step.copy(),
            "block_entered_step": self._entered_step.copy(),
            "assignment": self._assignment,
            "first_block": first_block_in(self._entered_step),
        }

    def _simulate(self, n):
        for _ in range(n):
            self._client.stepSimulation()

    # ----------------------------------------------------------------- observation / state
    def _block_xy(self):
        return np.array([self._client.getBasePositionAndOrientation(b)[0][:2] for b in self._blocks])

    def _zone_xy(self):
        return np.array([self._client.getBasePositionAndOrientation(z)[0][:2] for z in self._zones])

    def _pose_xy_yaw(self, body):
        position, orientation = self._client.getBasePositionAndOrientation(body)
        return position[0], position[1], _yaw(orientation)

    def _observation(self):
        block, block2 = (self._pose_xy_yaw(b) for b in self._blocks)
        target, target2 = (self._pose_xy_yaw(z) for z in self._zones)
        # IBC reports yaws modulo pi (the blocks are symmetric under quarter turns anyway).
        obs = np.concatenate([
            block[:2], [block[2] % math.pi], block2[:2], [block2[2] % math.pi],
            self._robot.effector_xy(), self._effector_target,
            target[:2], [target[2] % math.pi], target2[:2], [target2[2] % math.pi],
        ])
        return obs.astype(np.float32)

    def get_state(self):
        """(14,) float64: block, block2, target, target2 as (x, y, yaw), then the effector target (x, y)."""
        poses = [self._pose_xy_yaw(body) for body in (*self._blocks, *self._zones)]
        return np.concatenate([np.ravel(poses), self._effector_target])

    def set_state(self, state):
        """Teleport blocks, zones and effector to `state` (see `get_state`); the episode goes on."""
        self._apply_state(state, where="set_state")

    def _apply_state(self, state, where):
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            raise ValueError(f"BlockPush {where}: expected a finite state of shape ({STATE_DIM},), got {state.shape}")
        poses = state[:12].reshape(4, 3)
        for block, pose in zip(self._blocks, poses[:2], strict=True):
            self._place(block, pose[:2], pose[2], BLOCK_HALF_SIZE)
        for zone, pose in zip(self._zones, poses[2:], strict=True):
            self._place(zone, pose[:2], pose[2], ZONE_HEIGHT)
        self._effector_target = np.clip(state[12:], WORKSPACE_BOUNDS[0], WORKSPACE_BOUNDS[1])
        self._robot.teleport(self._effector_target)

    # ----------------------------------------------------------------- rendering
    def render(self):
        height, width = self.render_size
        view = self._client.computeViewMatrix(cameraEyePosition=(1.0, 0.0, 0.75),
                                              cameraTargetPosition=(0.4, 0.0, 0.0), cameraUpVector=(0, 0, 1))
        projection = self._client.computeProjectionMatrixFOV(fov=45.0, aspect=width / height, nearVal=0.01, farVal=10.0)
        _, _, rgba, _, _ = self._client.getCameraImage(width, height, view, projection,
                                                       renderer=pybullet.ER_TINY_RENDERER)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]

    def close(self):
        if self._client is not None:
            self._client.disconnect()
            self._client = None


def first_block_in(entered_step):
    """The block (0 or 1) that first entered a zone, from `info["block_entered_step"]`; -1 if none did."""
    entered_step = np.asarray(entered_step)
    if (entered_step < 0).all():
        return -1
    first_entry = np.where(entered_step >= 0, entered_step, np.iinfo(np.int64).max).min(axis=1)
    return int(np.argmin(first_entry))
