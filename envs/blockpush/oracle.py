"""Scripted expert for multimodal block pushing, in the spirit of IBC's oriented multimodal push oracle.

Each episode the oracle draws which block goes first and into which zone (the other block then goes into
the other zone): four equally likely plans, the source of the demonstrations' multimodality. Each block is
pushed with the same loop: approach a point behind the block on the line from the zone through the
block, make contact, push through the block's centre while that line stays within 0.2 rad of a face
normal, and otherwise swing around the block's corner to turn it square again. Once the first block is in
its zone the oracle backs off along its push line and returns to its start before the second block.
The oracle reads only the 16-D observation and returns 2-D effector-target deltas.
"""

import enum

import numpy as np

from envs.blockpush.env import CONTROL_HZ, OBS_SLICES

# Speeds as distances per step at the env's 10 Hz (IBC states them in m/s).
APPROACH_STEP = 0.3 / CONTROL_HZ
PUSH_STEP = 0.35 / CONTROL_HZ
ORIENT_STEP = 0.15 / CONTROL_HZ

# Distances behind the block centre along the push line.
PRE_BLOCK_OFFSET = 0.05
CONTACT_OFFSET = 0.03
PUSH_OFFSET = 0.01  # inside the block: the arm keeps pressing
ORIENT_RADIUS = 0.025  # circle the pusher sweeps around a block to turn it
ORIENT_SWEEP = 0.2  # rad ahead of the pusher on that circle

REORIENT_ABOVE = 0.2  # rad of face misalignment that interrupts a push
SQUARE_BELOW = 0.03  # rad of misalignment that ends a turn
ARRIVED = 1e-3  # m between effector target and waypoint
DELIVERED = 0.04  # m between block and zone: tighter than the env's 0.05 so the block sits well inside

# Clearance kept between the pusher and blocks it must not touch while travelling.
CLEARANCE_OWN_BLOCK = 0.045
CLEARANCE_OTHER_BLOCK = 0.06
DETOUR_MARGIN = 0.01

# (first block, its zone); the second block goes into the other zone.
PLANS = ((0, 0), (0, 1), (1, 0), (1, 1))


class Phase(enum.Enum):
    APPROACH = "approach"
    CONTACT = "contact"
    PUSH = "push"
    ORIENT = "orient"
    BACK_OFF = "back_off"
    RETURN = "return"


def _unit(v):
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _rotate(v, angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _face_error(push_direction, block_yaw):
    """Angle from the nearest block face normal to the push direction, in [-pi/4, pi/4)."""
    angle = np.arctan2(push_direction[1], push_direction[0]) - block_yaw
    return (angle + np.pi / 4) % (np.pi / 2) - np.pi / 4


def _limit(delta, max_length):
    length = float(np.linalg.norm(delta))
    return delta if length <= max_length else delta * (max_length / length)


def _detour(start, goal, obstacle, radius):
    """A waypoint that keeps the straight path start->goal outside `radius` of `obstacle`, or None."""
    segment = goal - start
    t = np.clip(np.dot(obstacle - start, segment) / max(float(np.dot(segment, segment)), 1e-12), 0.0, 1.0)
    closest = start + t * segment
    offset = closest - obstacle
    if np.linalg.norm(offset) >= radius or np.linalg.norm(goal - obstacle) < radius:
        return None
    if np.linalg.norm(offset) < 1e-6:
        offset = np.array([-segment[1], segment[0]])
    return obstacle + (radius + DETOUR_MARGIN) * _unit(offset)


class MultimodalPushOracle:
    """Call `reset(rng)` at each episode start, then `action = oracle(obs)` every step."""

    def __init__(self):
        self.plan = None
        self.phase = Phase.APPROACH

    def reset(self, rng):
        """Draw the episode's plan (block order and zone assignment) from `rng` (a numpy Generator)."""
        first_block, first_zone = PLANS[rng.integers(len(PLANS))]
        self.plan = ((first_block, first_zone), (1 - first_block, 1 - first_zone))
        self._task = 0
        self._home = None
        self._first_pre_block = None
        self.phase = Phase.APPROACH

    @property
    def plan_index(self):
        return PLANS.index(self.plan[0])

    def __call__(self, obs):
        if self.plan is None:
            raise RuntimeError("MultimodalPushOracle: call reset(rng) before asking for actions")
        obs = np.asarray(obs, dtype=np.float64)
        effector = obs[OBS_SLICES["effector_target_translation"]]
        blocks = [obs[OBS_SLICES["block_translation"]], obs[OBS_SLICES["block2_translation"]]]
        yaws = [obs[OBS_SLICES["block_orientation"]][0], obs[OBS_SLICES["block2_orientation"]][0]]
        zones = [obs[OBS_SLICES["target_translation"]], obs[OBS_SLICES["target2_translation"]]]
        if self._home is None:
            self._home = effector.copy()

        block_index, zone_index = self.plan[self._task]
        block, zone = blocks[block_index], zones[zone_index]
        if self._task == 0 and np.linalg.norm(block - zone) < DELIVERED:
            self._task = 1
            self.phase = Phase.BACK_OFF
            block_index, zone_index = self.plan[1]
            block, zone = blocks[block_index], zones[zone_index]
        other = blocks[1 - block_index]
        return self._act(effector, block, yaws[block_index], zone, other)

    def _act(self, effector, block, yaw, zone, other):
        direction = _unit(zone - block)
        error = _face_error(direction, yaw)
        pre_block = block - PRE_BLOCK_OFFSET * direction

        if self.phase is Phase.BACK_OFF:
            goal = self._first_pre_block if self._first_pre_block is not None else self._home
            if np.linalg.norm(goal - effector) < ARRIVED:
                self.phase = Phase.RETURN
            return self._travel(effector, goal, obstacles=())
        if self.phase is Phase.RETURN:
            if np.linalg.norm(self._home - effector) < ARRIVED:
                self.phase = Phase.APPROACH
            return self._travel(effector, self._home, obstacles=((other, CLEARANCE_OTHER_BLOCK),))

        if self.phase is Phase.APPROACH:
            if np.linalg.norm(pre_block - effector) < ARRIVED:
                self.phase = Phase.CONTACT
                if self._task == 0 and self._first_pre_block is None:
                    self._first_pre_block = pre_block.copy()
            else:
                obstacles = ((block, CLEARANCE_OWN_BLOCK), (other, CLEARANCE_OTHER_BLOCK))
                return self._travel(effector, pre_block, obstacles)

        if self.phase is Phase.CONTACT:
            if abs(error) > REORIENT_ABOVE:
                self.phase = Phase.ORIENT
            else:
                contact = block - CONTACT_OFFSET * direction
                if np.linalg.norm(contact - effector) < ARRIVED:
                    self.phase = Phase.PUSH
                return _limit(contact - effector, PUSH_STEP)

        if self.phase is Phase.PUSH:
            if abs(error) > REORIENT_ABOVE:
                self.phase = Phase.APPROACH
            return _limit(block - PUSH_OFFSET * direction - effector, PUSH_STEP)

        # ORIENT: sweep along a circle around the block in the direction that squares it up.
        if abs(error) < SQUARE_BELOW:
            self.phase = Phase.APPROACH
        sweep = ORIENT_SWEEP * np.sign(error)
        spot = block + ORIENT_RADIUS * _rotate(_unit(effector - block), sweep)
        return _limit(spot - effector, ORIENT_STEP)

    @staticmethod
    def _travel(effector, goal, obstacles):
        waypoint = goal
        for center, radius in obstacles:
            detour = _detour(effector, waypoint, center, radius)
            if detour is not None:
                waypoint = detour
                break
        return _limit(waypoint - effector, APPROACH_STEP)
