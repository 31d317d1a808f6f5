"""Best-of-N chunk selection: of N chunks drawn in one batched pass, keep the one that agrees best with the
actions already committed (bidirectional decoding's rejection step, BID, as in the real-time-chunking baselines).

A one-step policy makes this cheap: the N candidates are one forward pass over a batch of N noise draws. The
committed actions are those the robot will execute from its queue from the new chunk's first step on; the new
chunk's actions for the same steps are compared with them, early steps weighing most (exp(-decay·i)), since those
are the ones the hand-over happens at.
"""
from __future__ import annotations

import numpy as np

MAX_CANDIDATES = 64


def overlap_distance(candidates: np.ndarray, committed: np.ndarray, decay: float = 0.5) -> np.ndarray:
    """Weighted squared distance (N,) between each candidate (N, Ta, Da) and the m committed actions (m, Da) over
    their first min(m, Ta) steps."""
    m = min(len(committed), candidates.shape[1])
    weights = np.exp(-decay * np.arange(m))
    squared = np.square(candidates[:, :m] - committed[None, :m]).sum(axis=-1)  # (N, m)
    return squared @ weights


def choose_consistent(candidates: np.ndarray, committed: np.ndarray, decay: float = 0.5) -> int:
    """Index of the candidate closest to the committed actions (the first one when nothing is committed)."""
    if len(committed) == 0:
        return 0
    return int(np.argmin(overlap_distance(candidates, committed, decay)))
