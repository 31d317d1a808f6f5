"""Running a policy at a fixed control rate: ``ControlLoop`` drives an environment with chunks from a server.

Time is a grid of control steps: step k's action is due at the monotonic deadline t0 + k·dt, and the observation
taken right after step k - 1 is observation k. A chunk requested with observation k stamps its actions i = 0, 1,
... with steps k + i (DP's observation time + (i + offset)·dt, offset 0 here because observation k precedes step
k), and when it arrives every action whose step has already been executed is dropped: what counts as past is what
the loop actually consumed, not a latency estimate. Requests run on a background thread, so the loop keeps its
deadlines while the next chunk is computed.

Hand-over modes, when a new chunk meets the queue:
- ``sync``: request only when the queue is empty and wait for the chunk (the robot pauses if it is late);
- ``replace``: request while actions remain, so the chunk arrives in time; it replaces the queue from its first
  executable step on (DP's real-robot loop: a new chunk overwrites the old one's tail);
- ``ensemble``: request every step and execute, for each step, the average of every chunk's action for it with
  weights exp(-k·i), i = 0 for the oldest (ACT's temporal ensembling, k = 0.01).
In ``replace`` mode the request goes out when the queue holds no more actions than the steps a round trip will
take; ``threshold='auto'`` estimates those from the 90th percentile of the last 20 round trips (a window, so one
slow warm-up call is forgotten); with fast inference it is 0 and the loop runs exactly like ``eval``'s.
"""
from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from drifting_policy.deploy.spec import PolicySpec, StepHistory

MODES = ("sync", "replace", "ensemble")


class ChunkQueue:
    """Actions by control step. ``merge`` adds a chunk whose first action is for ``first_step``; ``pop(step)``
    returns the action for ``step`` (or None) and forgets everything before it."""

    def __init__(self, mode: str, ensemble_k: float = 0.01):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        self.mode, self.ensemble_k = mode, ensemble_k
        self.predictions: dict[int, list[np.ndarray]] = {}  # step -> actions for it, oldest chunk first

    def merge(self, first_step: int, actions: np.ndarray, next_step: int) -> int:
        """Add a chunk; returns how many of its actions were dropped because their step was already executed."""
        dropped = max(0, min(len(actions), next_step - first_step))
        if self.mode != "ensemble" and dropped < len(actions):
            self.predictions = {}  # the new chunk replaces the queue's tail (and in sync mode the queue is empty)
        for i in range(dropped, len(actions)):
            self.predictions.setdefault(first_step + i, []).append(np.asarray(actions[i]))
        return dropped

    def remaining(self, step: int) -> int:
        return sum(1 for s in self.predictions if s >= step)

    def pop(self, step: int) -> np.ndarray | None:
        candidates = self.predictions.pop(step, None)
        self.predictions = {s: a for s, a in self.predictions.items() if s > step}
        if not candidates:
            return None
        weights = np.exp(-self.ensemble_k * np.arange(len(candidates)))
        return np.tensordot(weights / weights.sum(), np.stack(candidates), axes=1)


@dataclass
class EpisodeResult:
    seed: int
    score: float  # the episode's maximum reward (DP's score)
    steps: int
    deadline_misses: int
    underruns: int
    dropped_actions: int
    chunks: int
    round_trip_ms: list[float] = field(default_factory=list)
    achieved_rate_hz: float = 0.0


def step_observation(spec: PolicySpec, obs) -> dict[str, np.ndarray]:
    """An environment's observation as the spec's single-step dict: an array is the low-dim 'obs'."""
    if not isinstance(obs, dict):
        obs = {next(iter(spec.observation)): obs}
    return {key: np.asarray(obs[key], dtype=np.float32) for key in spec.observation}


class ControlLoop:
    """Runs episodes of ``env`` (gymnasium, one action per ``step``) at ``rate_hz`` with chunks from
    ``client.infer`` (a ``PolicyClient``, or anything with that method and a ``spec``)."""

    def __init__(self, client, rate_hz: float | None = None, mode: str = "replace", threshold: int | str = "auto",
                 ensemble_k: float = 0.01, late_tolerance: float = 0.1, latency_window: int = 20):
        self.client, self.spec = client, client.spec
        self.rate_hz = float(rate_hz or self.spec.control_rate_hz)
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive; got {rate_hz}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if threshold != "auto" and not (isinstance(threshold, int) and threshold >= 0):
            raise ValueError(f"threshold must be 'auto' or an int >= 0 (actions left when the next chunk is "
                             f"requested); got {threshold!r}")
        self.dt = 1.0 / self.rate_hz
        self.mode, self.threshold, self.ensemble_k = mode, threshold, ensemble_k
        self.late_tolerance_s = late_tolerance * self.dt  # a step applied later than this past its deadline is a miss
        self.round_trips: deque = deque(maxlen=latency_window)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-request")

    # ------------------------------------------------------------------ requests
    def _request(self, stacked: dict) -> tuple[np.ndarray, float]:
        """(actions, round-trip seconds)."""
        started = time.monotonic()
        actions = np.asarray(self.client.infer(stacked)["actions"], dtype=np.float32)
        expected = (self.spec.n_action_steps, self.spec.action_dim)
        if actions.shape != expected:
            raise ValueError(f"the server returned actions of shape {actions.shape}; expected {expected}")
        if not np.isfinite(actions).all():
            raise FloatingPointError("the server returned non-finite actions; stopping the loop")
        return actions, time.monotonic() - started

    def _steps_until_arrival(self, deadline: float) -> int:
        """How many steps will have been executed before a chunk requested now arrives (windowed p90)."""
        if not self.round_trips:
            return 0
        round_trip = float(np.percentile(self.round_trips, 90))
        return max(0, math.ceil((round_trip - (deadline - time.monotonic())) / self.dt))

    def _should_request(self, queue: ChunkQueue, step: int, deadline: float) -> bool:
        remaining = queue.remaining(step)
        if self.mode == "sync":
            return remaining == 0
        if self.mode == "ensemble":
            return True
        threshold = self._steps_until_arrival(deadline) if self.threshold == "auto" else self.threshold
        return remaining <= threshold

    # ------------------------------------------------------------------ one episode
    def run_episode(self, env, seed: int, max_steps: int | None = None) -> EpisodeResult:
        history, queue = StepHistory(self.spec.n_obs_steps), ChunkQueue(self.mode, self.ensemble_k)
        result = EpisodeResult(seed=seed, score=-math.inf, steps=0, deadline_misses=0, underruns=0,
                               dropped_actions=0, chunks=0)
        obs, _ = env.reset(seed=seed)
        stacked = history.push(step_observation(self.spec, obs))
        # The robot starts at rest: wait for the first chunk, then start the clock.
        actions, round_trip = self.executor.submit(self._request, stacked).result()
        self.round_trips.append(round_trip)
        result.round_trip_ms.append(round_trip * 1e3)
        queue.merge(0, actions, 0)
        result.chunks += 1
        t0 = time.monotonic()
        inflight: tuple[Future, int] | None = None
        last_action = None
        step = 0
        while max_steps is None or step < max_steps:
            deadline = t0 + step * self.dt
            if step > 0:
                stacked = history.push(step_observation(self.spec, obs))
                if inflight is None and self._should_request(queue, step, deadline):
                    inflight = (self.executor.submit(self._request, stacked), step)
            if inflight is not None and self.mode == "sync":
                inflight[0].result()
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if inflight is not None and inflight[0].done():
                (actions, round_trip), first_step = inflight[0].result(), inflight[1]
                self.round_trips.append(round_trip)
                result.round_trip_ms.append(round_trip * 1e3)
                result.dropped_actions += queue.merge(first_step, actions, step)
                result.chunks += 1
                inflight = None
            action = queue.pop(step)
            if action is None:
                result.underruns += 1
                action = last_action if last_action is not None else actions[0]
            applied = time.monotonic()
            if applied - deadline > self.late_tolerance_s:
                result.deadline_misses += 1
            first_applied = applied if step == 0 else first_applied
            obs, reward, terminated, truncated, _ = env.step(action)
            last_action = action
            result.score = max(result.score, float(reward))
            step += 1
            if terminated or truncated:
                break
        if inflight is not None:
            inflight[0].result()  # let the worker finish before the next episode
        result.steps = step
        result.achieved_rate_hz = (step - 1) / (applied - first_applied) if step > 1 else 0.0
        return result

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def summarize(results: list[EpisodeResult]) -> dict:
    """Mean score and the loop's health over episodes: misses, underruns, drops, rate, round-trip percentiles."""
    trips = np.concatenate([r.round_trip_ms for r in results]) if results else np.zeros(1)
    steps = sum(r.steps for r in results)
    return {
        "mean_score": float(np.mean([r.score for r in results])),
        "episodes": len(results),
        "steps": steps,
        "chunks": sum(r.chunks for r in results),
        "deadline_misses": sum(r.deadline_misses for r in results),
        "underruns": sum(r.underruns for r in results),
        "dropped_actions": sum(r.dropped_actions for r in results),
        "achieved_rate_hz": float(np.average([r.achieved_rate_hz for r in results],
                                             weights=[max(r.steps, 1) for r in results])),
        "round_trip_ms_p50": float(np.percentile(trips, 50)),
        "round_trip_ms_p90": float(np.percentile(trips, 90)),
        "round_trip_ms_p99": float(np.percentile(trips, 99)),
    }
