"""Running a policy at a fixed control rate: ``ControlLoop`` drives an environment with chunks from a server.

Time is a grid of control steps: step k's action is due at the monotonic deadline t0 + k·dt, and the observation
taken right after step k - 1 is observation k. A chunk requested with observation k stamps its actions i = 0, 1,
... with steps k + i (DP's observation time + (i + offset)·dt, offset 0 here because observation k precedes step
k), and when it arrives every action whose step has already been executed is dropped: what counts as past is what
the loop actually consumed, not a latency estimate. Requests run on a background thread, so the loop keeps its
deadlines while the next chunk is computed, and ask for the whole chunk from the current step (T - To + 1
actions), so the robot keeps acting from the old chunk while the new one is on its way.

A new chunk is requested every ``horizon`` steps (the execution horizon, default Ta, as ``eval`` replans; one
request is in flight at a time, so with a delay of d steps the period is max(horizon, d)). Hand-over modes, when
the new chunk arrives d steps after its observation:
- ``sync``: the robot stands still until the chunk is there (in simulated steps: d idle steps per chunk);
- ``replace``: the robot keeps executing the old chunk for those d steps, then the new chunk replaces the queue
  from its first executable step on (DP's real-robot loop; RTC's "naive" baseline);
- ``ensemble``: request every step and execute, for each step, the average of every chunk's action for it with
  weights exp(-k·i), i = 0 for the oldest (ACT's temporal ensembling, k = 0.01);
- ``best_of_n``: as ``replace``, but the server draws ``candidates`` chunks in one batched pass and keeps the one
  closest to the actions still queued (``best_of_n.choose_consistent``: bidirectional decoding's rejection step);
- ``prefix``: as ``replace``, and the request carries the actions the robot will execute while it is in flight
  (the expected delay's worth, at most the policy's ``max_prefix_steps``); a policy trained with
  ``max_prefix_delay`` continues them (training-time real-time chunking).

``delay_steps=d`` replaces the wall clock by simulation steps (``SimulatedDelay``): a chunk requested with
observation k becomes available at step k + d while the queue keeps executing (in ``sync`` mode the robot stands
still for those d steps instead), so the effect of an inference delay on a simulated task is measured
deterministically, whatever the machine's load. Every episode records its executed actions, the steps where a new
chunk took over and the idle steps, from which ``smoothness`` computes jerk and boundary jumps.
"""
from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from drifting_policy.deploy.spec import PolicySpec
from drifting_policy.step_queues import StepHistory, stack_steps

MODES = ("sync", "replace", "ensemble", "best_of_n", "prefix")


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

    def _action(self, step: int) -> np.ndarray:
        """The step's action: its one prediction, or (ensemble) their average, the oldest weighing exp(0)."""
        candidates = self.predictions[step]
        weights = np.exp(-self.ensemble_k * np.arange(len(candidates)))
        return np.tensordot(weights / weights.sum(), np.stack(candidates), axes=1)

    def upcoming(self, step: int) -> np.ndarray:
        """The queued actions (m, Da) for steps ``step``, ``step + 1``, ... up to the first gap."""
        actions = []
        while step + len(actions) in self.predictions:
            actions.append(self._action(step + len(actions)))
        return np.stack(actions) if actions else np.zeros((0, 0), np.float32)

    def pop(self, step: int) -> np.ndarray | None:
        action = self._action(step) if step in self.predictions else None
        self.predictions = {s: a for s, a in self.predictions.items() if s > step}
        return action


@dataclass
class EpisodeResult:
    seed: int
    score: float  # the episode's maximum reward (DP's score)
    steps: int
    deadline_misses: int
    underruns: int
    dropped_actions: int
    chunks: int
    idle_steps: int = 0  # simulated delay: steps the robot stood still waiting for a chunk
    round_trip_ms: list[float] = field(default_factory=list)
    achieved_rate_hz: float = 0.0
    actions: list[np.ndarray] = field(default_factory=list)  # executed, one per step
    rewards: list[float] = field(default_factory=list)
    handovers: list[int] = field(default_factory=list)  # steps whose action is the first after a chunk arrived
    idle_before: list[int] = field(default_factory=list)  # idle steps before each executed step, cumulative


def step_observation(spec: PolicySpec, obs) -> dict[str, np.ndarray]:
    """An environment's observation as the spec's single-step dict: an array is the low-dim 'obs'."""
    if not isinstance(obs, dict):
        obs = {next(iter(spec.observation)): obs}
    return {key: np.asarray(obs[key], dtype=np.float32) for key in spec.observation}


@dataclass
class Pending:
    """A requested chunk: planned from the observation before ``first_step``."""

    first_step: int
    future: Future | None = None  # wall clock
    result: tuple | None = None  # simulated delay: (actions, round trip s), available from ``available_step``
    available_step: int = 0


class WallClock:
    """Real time: requests run on a worker thread, step k is due at the monotonic deadline t0 + k·dt."""

    def __init__(self, dt: float, latency_window: int):
        self.dt = dt
        self.round_trips: deque = deque(maxlen=latency_window)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-request")
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def submit(self, request, stacked: dict, step: int) -> Pending:
        return Pending(step, future=self.executor.submit(request, stacked))

    def arrived(self, pending: Pending, step: int) -> bool:
        return pending.future.done()

    def wait(self, pending: Pending) -> int:
        pending.future.result()
        return 0  # waiting took real time: it shows as deadline misses

    def collect(self, pending: Pending) -> tuple[np.ndarray, float]:
        actions, round_trip = pending.future.result()
        self.round_trips.append(round_trip)
        return actions, round_trip

    def wait_until_due(self, step: int) -> float:
        """Sleep until step's deadline; how late we are past it (seconds, >= 0 unless early)."""
        deadline = self.t0 + step * self.dt
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return time.monotonic() - deadline

    def steps_until_arrival(self, step: int) -> int:
        """Steps that will have been executed before a chunk requested now arrives (windowed p90 round trip)."""
        if not self.round_trips:
            return 0
        round_trip = float(np.percentile(self.round_trips, 90))
        time_left = self.t0 + step * self.dt - time.monotonic()
        return max(0, math.ceil((round_trip - time_left) / self.dt))

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class SimulatedDelay:
    """Simulation steps instead of time: a chunk requested with observation k becomes available at step
    k + ``delay_steps`` while the queue keeps executing; deterministic, whatever the machine's load. In ``sync``
    mode the robot stands still for the delay instead (counted as idle steps)."""

    def __init__(self, delay_steps: int):
        if delay_steps < 0:
            raise ValueError(f"delay_steps must be >= 0; got {delay_steps}")
        self.delay_steps = delay_steps

    def start(self) -> None:
        pass

    def submit(self, request, stacked: dict, step: int) -> Pending:
        return Pending(step, result=request(stacked), available_step=step + self.delay_steps)

    def arrived(self, pending: Pending, step: int) -> bool:
        return step >= pending.available_step

    def wait(self, pending: Pending) -> int:
        pending.available_step = pending.first_step  # nothing was executed meanwhile
        return self.delay_steps

    def collect(self, pending: Pending) -> tuple[np.ndarray, float]:
        return pending.result

    def wait_until_due(self, step: int) -> float:
        return 0.0

    def steps_until_arrival(self, step: int) -> int:
        return self.delay_steps

    def close(self) -> None:
        pass


class ControlLoop:
    """Runs episodes of ``env`` (gymnasium, one action per ``step``) at ``rate_hz`` with chunks from
    ``client.infer`` (a ``PolicyClient``, or anything with that method and a ``spec``). With ``delay_steps`` the
    loop runs in simulation steps instead of real time (``SimulatedDelay``)."""

    def __init__(self, client, rate_hz: float | None = None, mode: str = "replace", horizon: int | None = None,
                 ensemble_k: float = 0.01, late_tolerance: float = 0.1, latency_window: int = 20,
                 delay_steps: int | None = None, candidates: int = 16):
        self.client, self.spec = client, client.spec
        self.rate_hz = float(rate_hz or self.spec.control_rate_hz)
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive; got {rate_hz}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if mode == "prefix" and not self.spec.max_prefix_steps:
            raise ValueError(f"mode 'prefix' needs a policy trained with max_prefix_delay > 0; {self.spec.name} "
                             "has none (use replace or best_of_n)")
        self.horizon = self.spec.n_action_steps if horizon is None else horizon
        if not (isinstance(self.horizon, int) and 1 <= self.horizon <= self.spec.chunk_steps):
            raise ValueError(f"horizon (actions executed per chunk before the next request) must be an int in "
                             f"[1, {self.spec.chunk_steps}]; got {horizon!r}")
        self.dt = 1.0 / self.rate_hz
        self.mode, self.ensemble_k, self.candidates = mode, ensemble_k, candidates
        self.late_tolerance_s = late_tolerance * self.dt  # a step applied later than this past its deadline is a miss
        self.clock = WallClock(self.dt, latency_window) if delay_steps is None else SimulatedDelay(delay_steps)

    # ------------------------------------------------------------------ requests
    def _request(self, stacked: dict) -> tuple[np.ndarray, float]:
        """(actions, round-trip seconds)."""
        started = time.monotonic()
        actions = np.asarray(self.client.infer(stacked)["actions"], dtype=np.float32)
        if actions.ndim != 2 or not 1 <= len(actions) <= self.spec.chunk_steps \
                or actions.shape[1] != self.spec.action_dim:
            raise ValueError(f"the server returned actions of shape {actions.shape}; expected (m, "
                             f"{self.spec.action_dim}) with 1 <= m <= {self.spec.chunk_steps}")
        if not np.isfinite(actions).all():
            raise FloatingPointError("the server returned non-finite actions; stopping the loop")
        return actions, time.monotonic() - started

    def _request_options(self, queue: ChunkQueue, step: int) -> dict:
        """What a request made at ``step`` carries besides the observations."""
        options = {"action_steps": self.spec.chunk_steps}
        if self.mode == "best_of_n":  # the server keeps the candidate that continues the queue best
            committed = queue.upcoming(step).reshape(-1, self.spec.action_dim)  # (0, Da) when empty
            options.update(best_of_n=self.candidates, committed=committed)
        if self.mode == "prefix":  # the actions executed while the request is in flight
            delay = min(self.clock.steps_until_arrival(step), self.spec.max_prefix_steps)
            options["prefix"] = queue.upcoming(step)[:delay].reshape(-1, self.spec.action_dim)
        return options

    def _push(self, history: StepHistory, obs) -> dict[str, np.ndarray]:
        """Add the environment's observation to the history; the stacked request {key: (To, *shape)}."""
        history.steps = history.pushed(step_observation(self.spec, obs))
        return stack_steps(history.steps, self.spec.observation, np.stack)

    # ------------------------------------------------------------------ one episode
    def run_episode(self, env, seed: int, max_steps: int | None = None) -> EpisodeResult:
        clock, history, queue = self.clock, StepHistory(self.spec.n_obs_steps), ChunkQueue(self.mode, self.ensemble_k)
        result = EpisodeResult(seed=seed, score=-math.inf, steps=0, deadline_misses=0, underruns=0,
                               dropped_actions=0, chunks=0)

        def take(pending: Pending, step: int) -> np.ndarray:
            actions, round_trip = clock.collect(pending)
            result.round_trip_ms.append(round_trip * 1e3)
            result.dropped_actions += queue.merge(pending.first_step, actions, step)
            result.chunks += 1
            return actions

        obs, _ = env.reset(seed=seed)
        # The robot starts at rest: wait for the first chunk, then start the clock.
        first = clock.submit(self._request, {**self._push(history, obs), **self._request_options(queue, 0)}, 0)
        result.idle_steps += clock.wait(first)
        fallback = take(first, 0)[0]
        clock.start()
        pending: Pending | None = None
        period = 1 if self.mode == "ensemble" else self.horizon
        last_request, arrived = 0, True
        last_action, step, first_applied, applied = None, 0, 0.0, 0.0
        while max_steps is None or step < max_steps:
            if pending is not None and clock.arrived(pending, step):
                take(pending, step)
                pending, arrived = None, True
            if step > 0:
                stacked = self._push(history, obs)
                if pending is None and step >= last_request + period:
                    pending = clock.submit(self._request, {**stacked, **self._request_options(queue, step)}, step)
                    last_request = step
            if pending is not None and self.mode == "sync":
                result.idle_steps += clock.wait(pending)
            late = clock.wait_until_due(step)
            if pending is not None and clock.arrived(pending, step):  # a chunk that came while we waited
                take(pending, step)
                pending, arrived = None, True
            action = queue.pop(step)
            if action is None:
                result.underruns += 1
                action = fallback if last_action is None else last_action  # hold
            elif arrived:
                result.handovers.append(step)
                arrived = False
            result.deadline_misses += int(late > self.late_tolerance_s)
            applied = time.monotonic()
            first_applied = applied if step == 0 else first_applied
            obs, reward, terminated, truncated, _ = env.step(action)
            last_action = action
            result.score = max(result.score, float(reward))
            result.actions.append(np.asarray(action, dtype=np.float32))
            result.rewards.append(float(reward))
            result.idle_before.append(result.idle_steps)
            step += 1
            if terminated or truncated:
                break
        if pending is not None:
            clock.wait(pending)  # let the worker finish before the next episode
        result.steps = step
        result.achieved_rate_hz = (step - 1) / (applied - first_applied) if step > 1 else 0.0
        return result

    def close(self) -> None:
        self.clock.close()


def smoothness(result: EpisodeResult) -> dict:
    """How smooth the executed actions were: the mean squared jerk (third difference per step, squared norm) and
    the largest and mean jump ||a_t - a_(t-1)|| at the steps where a new chunk took over (the first chunk's start
    excluded), next to the mean jump at every step, in action units."""
    actions = np.stack(result.actions) if result.actions else np.zeros((0, 1))
    steps = np.linalg.norm(np.diff(actions, axis=0), axis=-1)  # steps[t - 1] = ||a_t - a_(t-1)||
    jerk = np.square(np.diff(actions, n=3, axis=0)).sum(axis=-1)
    jumps = np.array([steps[t - 1] for t in result.handovers if t > 0])
    return {"mean_squared_jerk": float(jerk.mean()) if len(jerk) else 0.0,
            "max_handover_jump": float(jumps.max()) if len(jumps) else 0.0,
            "mean_handover_jump": float(jumps.mean()) if len(jumps) else 0.0,
            "mean_step": float(steps.mean()) if len(steps) else 0.0}


def score_within(result: EpisodeResult, wall_steps: int) -> float:
    """The episode's score counting only what happened within ``wall_steps`` steps of wall time (executed plus
    idle): what a synchronous robot reaches in the time the others had."""
    reached = [reward for t, (reward, idle) in enumerate(zip(result.rewards, result.idle_before, strict=True))
               if t + idle < wall_steps]
    return max(reached, default=0.0)


def summarize(results: list[EpisodeResult]) -> dict:
    """Mean score and the loop's health over episodes: misses, underruns, drops, rate, round-trip percentiles."""
    trips = np.concatenate([r.round_trip_ms for r in results]) if results else np.zeros(1)
    steps = sum(r.steps for r in results)
    motion = [smoothness(r) for r in results]
    return {
        "mean_score": float(np.mean([r.score for r in results])),
        **({key: float(np.mean([m[key] for m in motion])) for key in motion[0]} if motion else {}),
        "idle_steps": sum(r.idle_steps for r in results),
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
