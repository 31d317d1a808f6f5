"""Diffusion Policy's multi-step interface for any gymnasium env: To stacked observations in, Ta actions out."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np


def _stacked_space(space: gym.Space, n: int) -> gym.Space:
    if isinstance(space, gym.spaces.Box):
        return gym.spaces.Box(
            low=np.repeat(space.low[None], n, axis=0), high=np.repeat(space.high[None], n, axis=0), dtype=space.dtype
        )
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({key: _stacked_space(sub, n) for key, sub in space.spaces.items()})
    raise TypeError(f"MultiStepWrapper: cannot stack observation space {space!r} (expected Box or Dict of Box)")


def _stack(history: deque):
    first = history[0]
    if isinstance(first, dict):
        return {key: np.stack([obs[key] for obs in history]) for key in first}
    return np.stack(history)


class MultiStepWrapper(gym.Wrapper):
    """Observations are the last ``n_obs_steps`` env observations stacked on a new leading axis (the reset
    observation repeated until enough steps have passed); ``step`` takes ``(k, action_dim)`` actions and executes
    them in order, stopping early when the episode ends.

    The reward reported by ``step`` is the maximum reward seen so far in the episode (DP's score is the mean of
    that over episodes). Once the episode has ended, further ``step`` calls leave the env alone and repeat the
    final result, so a vector env can keep stepping finished members until all are done.
    ``max_episode_steps`` (env steps, optional) truncates the episode.
    """

    def __init__(self, env: gym.Env, n_obs_steps: int, n_action_steps: int, max_episode_steps: int | None = None):
        super().__init__(env)
        if n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError(f"MultiStepWrapper: n_obs_steps and n_action_steps must be >= 1, got {n_obs_steps}, "
                             f"{n_action_steps}")
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.max_episode_steps = max_episode_steps
        self.observation_space = _stacked_space(env.observation_space, n_obs_steps)
        act = env.action_space
        self.action_space = gym.spaces.Box(
            low=np.repeat(act.low[None], n_action_steps, 0), high=np.repeat(act.high[None], n_action_steps, 0),
            dtype=act.dtype,
        )
        self._history: deque = deque(maxlen=n_obs_steps)
        self.max_reward = -np.inf
        self.n_steps = 0
        self._last = None  # the final step result once the episode has ended

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._history = deque([obs] * self.n_obs_steps, maxlen=self.n_obs_steps)
        self.max_reward = -np.inf
        self.n_steps = 0
        self._last = None
        return _stack(self._history), info

    def step(self, actions):
        if self._last is not None:
            return self._last
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[1:] != self.env.action_space.shape:
            raise ValueError(
                "MultiStepWrapper.step: expected actions of shape "
                f"(k, {', '.join(map(str, self.env.action_space.shape))}),"
                f" got {actions.shape}"
            )
        terminated = truncated = False
        info: dict = {}
        for action in actions:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._history.append(obs)
            self.max_reward = max(self.max_reward, float(reward))
            self.n_steps += 1
            if self.max_episode_steps is not None and self.n_steps >= self.max_episode_steps:
                truncated = True
            if terminated or truncated:
                break
        info = dict(info, max_reward=self.max_reward)
        result = (_stack(self._history), self.max_reward, bool(terminated), bool(truncated), info)
        if terminated or truncated:
            self._last = result
        return result
