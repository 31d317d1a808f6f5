"""Policy evaluation on vectorized envs, following Diffusion Policy's env-runner protocol.

An evaluation is a list of episodes, each started either from a seed (the env's own seeded reset) or from a saved
initial state (for the "train" episodes, the initial states of dataset episodes). Episodes run in chunks of
``n_envs`` on a gymnasium ``AsyncVectorEnv`` (or ``SyncVectorEnv``); every member is a ``MultiStepWrapper`` around
a ``VideoRecorder`` around the task's env. The score of an episode is its maximum reward, and ``<prefix>/mean_score``
is the mean over the episodes of that prefix. A non-finite action stops the run with an error: it is not scored.

What a task supplies is small: a picklable ``env_fn`` returning its single env, whose ``reset`` honours a pending
``reset_state`` attribute (set per worker through ``set_attr``), and the observation key names the policy expects.
Tasks with phase metrics (BlockPush, Kitchen) also pass ``summarize(prefixes, final_infos) -> dict``, which turns
each episode's last ``info`` into log entries (its ``<prefix>/mean_score`` replaces the max-reward one).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from tqdm import tqdm

from envs.common.multistep import MultiStepWrapper
from envs.common.video import VideoRecorder


@dataclasses.dataclass
class Episode:
    """One evaluation episode: ``prefix`` is "train" or "test"; ``reset_state`` (optional) overrides the seeded
    initial state; ``video`` asks for a recording."""

    prefix: str
    seed: int
    reset_state: np.ndarray | None = None
    video: bool = False


def dp_episodes(
    train_states: Sequence[np.ndarray] = (),
    n_test: int = 50,
    test_start_seed: int = 100000,
    train_start_seed: int = 0,
    n_train_vis: int = 2,
    n_test_vis: int = 4,
) -> list[Episode]:
    """DP's evaluation set: one "train" episode per given initial state, then ``n_test`` seeded "test" episodes."""
    train = [
        Episode("train", train_start_seed + i, np.asarray(state), video=i < n_train_vis)
        for i, state in enumerate(train_states)
    ]
    test = [Episode("test", test_start_seed + i, video=i < n_test_vis) for i in range(n_test)]
    return train + test


def seeded_initial_states(env_fn: Callable[[], gym.Env], n: int, start_seed: int = 0) -> list[np.ndarray]:
    """``get_state()`` after the env's seeded reset for seeds start_seed .. start_seed + n - 1 (DP's "train" starts
    for tasks whose demonstrations began from those seeds)."""
    env = env_fn()
    states = []
    for seed in range(start_seed, start_seed + n):
        env.reset(seed=seed)
        states.append(env.get_state())
    env.close()
    return states


def _member_info(info: dict, i: int) -> dict:
    """Member ``i``'s entries of a vector env's info dict (gymnasium marks present entries with ``_<key>``)."""
    return {key: value[i] for key, value in info.items()
            if not key.startswith("_") and info.get(f"_{key}", np.ones(i + 1, dtype=bool))[i]}


def _wrapped_env(env_fn: Callable[[], gym.Env], n_obs_steps: int, n_action_steps: int, fps: int) -> gym.Env:
    return MultiStepWrapper(VideoRecorder(env_fn(), fps=fps), n_obs_steps, n_action_steps)


class VectorEnvRunner:
    """Runs a policy with ``predict_action(obs_dict) -> {"action": (B, Ta, Da)}`` on ``episodes``.

    Observation dict for the policy: an array observation (B, To, D) goes under ``lowdim_key`` ("obs" in DP's
    low-dim policies); a dict observation contributes ``obs_keys`` (default: all of its keys), each (B, To, ...).
    Values are float32 tensors on ``policy.device`` (CPU if the policy has none).
    """

    def __init__(
        self,
        env_fn: Callable[[], gym.Env],
        episodes: Sequence[Episode],
        n_obs_steps: int,
        n_action_steps: int,
        n_envs: int | None = None,
        vectorization: str = "async",
        obs_keys: Sequence[str] | None = None,
        lowdim_key: str = "obs",
        output_dir: str | Path | None = None,
        video_format: str = "mp4",
        fps: int = 10,
        show_progress: bool = True,
        summarize: Callable[[list[str], list[dict]], dict] | None = None,
        start_method: str | None = None,
    ):
        if vectorization not in ("async", "sync"):
            raise ValueError(f"VectorEnvRunner: vectorization must be 'async' or 'sync', got {vectorization!r}")
        if video_format not in ("mp4", "gif"):
            raise ValueError(f"VectorEnvRunner: video_format must be 'mp4' or 'gif', got {video_format!r}")
        if not episodes:
            raise ValueError("VectorEnvRunner: no episodes to run")
        self.env_fn = env_fn  # one bare env of the task (the control runtime drives it step by step)
        self.episodes = list(episodes)
        self.n_envs = min(n_envs or len(self.episodes), len(self.episodes))
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.obs_keys = None if obs_keys is None else list(obs_keys)
        self.lowdim_key = lowdim_key
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.video_format = video_format
        self.show_progress = show_progress
        self.summarize = summarize
        fns = [functools.partial(_wrapped_env, env_fn, n_obs_steps, n_action_steps, fps)] * self.n_envs
        if vectorization == "async":
            self.env = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP, context=start_method)
        else:
            self.env = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)

    def policy_obs(self, obs: Any, device: torch.device | str) -> dict[str, torch.Tensor]:
        if isinstance(obs, dict):
            keys = self.obs_keys or list(obs)
            missing = [key for key in keys if key not in obs]
            if missing:
                raise KeyError(f"VectorEnvRunner: observation keys {missing} not in the env's observation {list(obs)}")
            arrays = {key: obs[key] for key in keys}
        else:
            arrays = {self.lowdim_key: obs}
        return {key: torch.as_tensor(np.asarray(value), dtype=torch.float32, device=device)
                for key, value in arrays.items()}

    def run(self, policy) -> dict[str, Any]:
        """Returns ``{prefix}/sim_max_reward_{seed}`` per episode, ``{prefix}/mean_score`` per prefix, and
        ``{prefix}/sim_video_{seed}`` (file path) for each recorded episode."""
        device = getattr(policy, "device", "cpu")
        scores = np.zeros(len(self.episodes))
        final_infos: list[dict] = [{} for _ in self.episodes]
        videos: dict[int, Path] = {}
        chunks = range(0, len(self.episodes), self.n_envs)
        for start in tqdm(chunks, desc="eval chunks", disable=not self.show_progress, leave=False):
            chunk = self.episodes[start : start + self.n_envs]
            # Idle members repeat the last episode; their results are dropped.
            members = chunk + [chunk[-1]] * (self.n_envs - len(chunk))
            paths = [self._video_path(ep) if ep.video and i < len(chunk) else None for i, ep in enumerate(members)]
            videos.update({start + i: p for i, p in enumerate(paths) if p is not None})
            self.env.set_attr("reset_state", [ep.reset_state for ep in members])
            self.env.set_attr("video_path", [None if p is None else str(p) for p in paths])
            obs, _ = self.env.reset(seed=[ep.seed for ep in members])
            if hasattr(policy, "reset"):
                policy.reset()
            done = np.zeros(self.n_envs, dtype=bool)
            max_reward = np.full(self.n_envs, -np.inf)
            while not done.all():
                with torch.no_grad():
                    action = policy.predict_action(self.policy_obs(obs, device))["action"]
                action = action.detach().cpu().numpy() if torch.is_tensor(action) else np.asarray(action)
                if action.shape[0] != self.n_envs or action.ndim != 3:
                    raise ValueError(f"VectorEnvRunner: policy returned actions of shape {action.shape}, "
                                     f"expected ({self.n_envs}, Ta, Da)")
                self._check_finite(action, members)
                obs, reward, terminated, truncated, info = self.env.step(action[:, : self.n_action_steps])
                # Finished members are auto-reset by the vector env and run on; only their episode counts.
                max_reward = np.where(done, max_reward, np.maximum(max_reward, reward))
                for i in np.flatnonzero((terminated | truncated) & ~done):
                    if i < len(chunk):
                        final_infos[start + i] = _member_info(info, i)
                done |= terminated | truncated
            scores[start : start + len(chunk)] = max_reward[: len(chunk)]
        log = self._log(scores, videos)
        if self.summarize is not None:
            log.update(self.summarize([ep.prefix for ep in self.episodes], final_infos))
        return log

    @staticmethod
    def _check_finite(action: np.ndarray, members: list[Episode]) -> None:
        """A non-finite action would be clipped or ignored by the env and still scored; stop instead."""
        finite = np.isfinite(action).all(axis=(1, 2))
        if not finite.all():
            episodes = sorted({f"{members[i].prefix} seed {members[i].seed}" for i in np.flatnonzero(~finite)})
            raise FloatingPointError(f"VectorEnvRunner: the policy returned non-finite actions (NaN or inf) in "
                                     f"{', '.join(episodes)}; stopped without a score (its weights or observations "
                                     "hold non-finite values?)")

    def _video_path(self, episode: Episode) -> Path | None:
        if self.output_dir is None:
            return None
        return self.output_dir / "media" / f"{episode.prefix}_{episode.seed}.{self.video_format}"

    def _log(self, scores: np.ndarray, videos: dict[int, Path]) -> dict[str, Any]:
        log: dict[str, Any] = {}
        by_prefix: dict[str, list[float]] = {}
        for i, (episode, score) in enumerate(zip(self.episodes, scores, strict=True)):
            log[f"{episode.prefix}/sim_max_reward_{episode.seed}"] = float(score)
            by_prefix.setdefault(episode.prefix, []).append(float(score))
            if i in videos:
                log[f"{episode.prefix}/sim_video_{episode.seed}"] = str(videos[i])
        for prefix, values in by_prefix.items():
            log[f"{prefix}/mean_score"] = float(np.mean(values))
        return log

    def close(self) -> None:
        self.env.close()
