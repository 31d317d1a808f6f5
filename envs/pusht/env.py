"""PushT with Diffusion Policy's observation conventions, on top of gym-pusht.

gym-pusht (0.1.8) supplies the physics, reward, success threshold and the 300-step time limit. This wrapper adds
what Diffusion Policy's PushT task expects:

* ``obs_type="state"``: (5,) agent x, y, block x, y, block angle in [0, 2pi).
* ``obs_type="keypoints"``: (20,) the 9 block keypoints (x, y each) followed by the agent position (DP's
  ``pusht_lowdim``).
* ``obs_type="image"``: ``{"image": (3, 96, 96) float32 in [0, 1], "agent_pos": (2,)}`` (DP's ``pusht_image``).

and an exact state restore. gym-pusht's own ``reset_to_state`` sets the block position before its angle, and pymunk
rotates a body about its centre of gravity (local (0, 45) for the T), so the block lands away from where it was asked
to be; ``set_state`` here writes the bodies in the order that round-trips: agent position and velocity, then block
angle, then block position.
"""

from __future__ import annotations

import functools

import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
import gymnasium as gym
import numpy as np
import pygame
import pymunk
from gym_pusht.envs.pusht import PushTEnv as _GymPushTEnv
from gym_pusht.envs.pymunk_override import DrawOptions

OBS_TYPES = ("state", "keypoints", "image")
MAX_EPISODE_STEPS = 300
SUCCESS_COVERAGE = 0.95
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
# The T as gym-pusht builds it, in the block's body frame: a 120x30 bar on top of a 30x90 stem.
T_BAR = np.array([[-60.0, 30.0], [60.0, 30.0], [60.0, 0.0], [-60.0, 0.0]])
T_STEM = np.array([[-15.0, 30.0], [-15.0, 120.0], [15.0, 120.0], [15.0, 30.0]])
T_CENTER_OF_GRAVITY = np.array([0.0, 45.0])
N_BLOCK_KEYPOINTS = 9
PHYSICS_STEPS_PER_ACTION = 10  # 100 Hz physics, 10 Hz control


def _farthest_point_sampling(points: np.ndarray, n_points: int, first: int) -> np.ndarray:
    chosen = [points[first]]
    min_dist = np.linalg.norm(points - points[first], axis=1)
    for _ in range(n_points - 1):
        nxt = int(np.argmax(min_dist))
        chosen.append(points[nxt])
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[nxt], axis=1))
    return np.stack(chosen)


@functools.lru_cache(maxsize=1)
def block_keypoints_local(seed: int = 0) -> np.ndarray:
    """(9, 2) keypoints of the T in its body frame, defined the way DP's ``PymunkKeypointManager`` does.

    The T is drawn at its rest pose (position (256, 300), angle 0) on a white 512x512 canvas; the drawn pixels,
    expressed in the body frame, are reduced to 9 points by farthest point sampling from a seeded random start, and
    each point gets a seeded sub-pixel shift. The result is a fixed table, so the keypoints of a pose are a
    deterministic function of that pose (``block_keypoints``).
    """
    rng = np.random.default_rng(seed)
    space = pymunk.Space()
    _GymPushTEnv.add_tee(space, (256, 300), 0)
    screen = pygame.Surface((512, 512))
    screen.fill(pygame.Color("white"))
    space.debug_draw(DrawOptions(screen))
    img = np.asarray(pygame.surfarray.array3d(screen)).transpose(1, 0, 2)
    rows, cols = np.nonzero((img != 255).any(axis=-1))
    local = np.stack([cols, rows], axis=1).astype(np.float64) - np.array([256.0, 300.0])
    first = int(rng.choice(len(local)))
    keypoints = _farthest_point_sampling(local, N_BLOCK_KEYPOINTS, first)
    return keypoints + rng.uniform(0, 1, size=keypoints.shape)


def pose_transform(pose: np.ndarray, local_points: np.ndarray) -> np.ndarray:
    """Body-frame points (..., 2) to world coordinates for a pose (x, y, angle) (pymunk's ``local_to_world``)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    rot = np.array([[c, -s], [s, c]])
    return local_points @ rot.T + np.asarray(pose[:2])


def block_keypoints(block_pose: np.ndarray) -> np.ndarray:
    """(9, 2) world keypoints of the T at ``block_pose`` = (x, y, angle)."""
    return pose_transform(np.asarray(block_pose, dtype=np.float64), block_keypoints_local())


def keypoint_obs(state: np.ndarray) -> np.ndarray:
    """DP's 20-D low-dim observation from a 5-D state: 9 block keypoints then the agent position."""
    state = np.asarray(state, dtype=np.float64)
    return np.concatenate([block_keypoints(state[2:5]).reshape(-1), state[:2]])


class PushTEnv(gym.Wrapper):
    """gym-pusht's PushT-v0 (reward clip(coverage/0.95, 0, 1), terminates above 0.95 coverage, truncates at 300
    steps) with DP observations and an exact ``set_state``.

    ``reset(options={"reset_to_state": state})`` or a pending ``reset_state`` attribute (settable per worker through
    a vector env's ``set_attr``; consumed by the next reset) start the episode from a 5-D state instead of the seeded
    random one. ``info["n_contacts"]`` counts contact points per physics step the way DP's dataset does.
    """

    def __init__(self, obs_type: str = "keypoints", render_size: int = 256, image_size: int = 96):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"PushTEnv: obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        env = gym.make(
            "gym_pusht/PushT-v0",
            obs_type="state",
            render_mode="rgb_array",
            max_episode_steps=MAX_EPISODE_STEPS,
            observation_width=image_size,
            observation_height=image_size,
            visualization_width=render_size,
            visualization_height=render_size,
            disable_env_checker=True,
        )
        super().__init__(env)
        self.obs_type = obs_type
        self.image_size = image_size
        self.reset_state: np.ndarray | None = None
        pos_box = gym.spaces.Box(0.0, 512.0, shape=(2,), dtype=np.float64)
        if obs_type == "state":
            self.observation_space = env.observation_space
        elif obs_type == "keypoints":
            self.observation_space = gym.spaces.Box(0.0, 512.0, shape=(2 * N_BLOCK_KEYPOINTS + 2,), dtype=np.float64)
        else:
            image_box = gym.spaces.Box(0.0, 1.0, shape=(3, image_size, image_size), dtype=np.float32)
            self.observation_space = gym.spaces.Dict({"image": image_box, "agent_pos": pos_box})

    @property
    def sim(self) -> _GymPushTEnv:
        return self.env.unwrapped

    def get_state(self) -> np.ndarray:
        """(5,) agent x, y, block x, y, block angle (not wrapped, unlike the observation)."""
        sim = self.sim
        return np.array([*sim.agent.position, *sim.block.position, sim.block.angle], dtype=np.float64)

    def get_agent_velocity(self) -> np.ndarray:
        return np.array(self.sim.agent.velocity, dtype=np.float64)

    def set_state(self, state: np.ndarray, agent_velocity: np.ndarray | None = None) -> None:
        """Put the bodies exactly at ``state`` (5,): agent position and velocity, then block angle, then position."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (5,):
            raise ValueError("PushTEnv.set_state: expected a (5,) state (agent x, y, block x, y, angle), "
                             f"got {state.shape}")
        sim = self.sim
        sim.agent.position = (state[0], state[1])
        sim.agent.velocity = (0.0, 0.0) if agent_velocity is None else tuple(np.asarray(agent_velocity, float))
        sim.block.angle = state[4]
        sim.block.position = (state[2], state[3])
        sim.block.velocity = (0.0, 0.0)
        sim.block.angular_velocity = 0.0
        sim.space.reindex_shapes_for_body(sim.agent)
        sim.space.reindex_shapes_for_body(sim.block)

    def coverage(self) -> float:
        return float(self.sim._get_coverage())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        state = None if options is None else options.get("reset_to_state")
        if state is None:
            state, self.reset_state = self.reset_state, None
        _, info = self.env.reset(seed=seed)
        if state is not None:
            self.set_state(state)
        return self._obs(), self._info(info)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"PushTEnv.step: expected a (2,) target position, got shape {action.shape}")
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(), float(reward), bool(terminated), bool(truncated), self._info(info)

    def render_image(self, size: int | None = None) -> np.ndarray:
        """(size, size, 3) uint8 frame without the action marker (what the image policy sees)."""
        sim = self.sim
        size = self.image_size if size is None else size
        return sim._get_img(sim._draw(), width=size, height=size, render_action=False)

    def _obs(self):
        state = self.get_state()
        if self.obs_type == "state":
            return np.concatenate([state[:4], [state[4] % (2 * np.pi)]])
        if self.obs_type == "keypoints":
            return keypoint_obs(state)
        image = self.render_image().astype(np.float32).transpose(2, 0, 1) / 255.0
        return {"image": image, "agent_pos": state[:2].copy()}

    def _info(self, info: dict) -> dict:
        info = dict(info)
        info["state"] = self.get_state()
        info["n_contacts"] = int(np.ceil(self.sim.n_contact_points / PHYSICS_STEPS_PER_ACTION))
        if "coverage" not in info:  # gym-pusht reports it on step, not on reset
            info["coverage"] = self.coverage()
        return info
