"""LeRobot's ``select_action`` bookkeeping, for torch tensors and numpy arrays alike (no torch import here, so an
ONNX policy on a controller without torch uses the same code).

A policy that acts one step at a time keeps the last To observation steps (the first one repeated after a reset,
as Diffusion Policy's env wrapper does) and the actions left of its current chunk; it predicts a new chunk when
none are left.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def stack_steps(steps: list[dict], keys: Iterable[str], stack: Callable[[list], object]) -> dict:
    """The steps as one array per key, ``{key: stack([step[key] for step in steps])}`` (``stack`` chooses the
    library and the axis)."""
    return {key: stack([step[key] for step in steps]) for key in keys}


class StepHistory:
    """The last ``n_obs_steps`` single-step observations {key: array}."""

    def __init__(self, n_obs_steps: int):
        self.n_obs_steps = n_obs_steps
        self.steps: list[dict] = []

    def reset(self) -> None:
        self.steps = []

    def pushed(self, step: dict) -> list[dict]:
        """The history with ``step`` added (the first step fills every slot); the history itself is unchanged."""
        return [*self.steps[1:], step] if self.steps else [step] * self.n_obs_steps


class ActionQueues:
    """``select_action``'s state. ``next_action`` changes it only when it succeeds, so a refused call (a bad
    observation, a batch size that changed without ``reset``, a failed prediction) leaves no trace."""

    def __init__(self, n_obs_steps: int, owner: str):
        self.history, self.owner = StepHistory(n_obs_steps), owner
        self.actions: list = []
        self.batch_size: int | None = None

    def reset(self) -> None:
        self.history.reset()
        self.actions, self.batch_size = [], None

    def next_action(self, step: dict, batch_size: int, predict_chunk: Callable[[list[dict]], Sequence]):
        """The next action for the observation ``step`` of ``batch_size`` episodes; ``predict_chunk(steps)`` gives
        the Ta actions of a new chunk from the To steps of the history."""
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ValueError(f"{self.owner}: select_action got a batch of {batch_size} after batches of "
                             f"{self.batch_size}; call reset() when the episodes change")
        steps = self.history.pushed(step)
        actions = self.actions or list(predict_chunk(steps))
        self.history.steps, self.actions, self.batch_size = steps, actions[1:], batch_size
        return actions[0]
