"""Fixed-length windows over episodes, with Diffusion Policy's padding and episode splits.

A window of ``sequence_length`` frames may start up to ``pad_before`` frames before an
episode and end up to ``pad_after`` frames after it; frames outside the episode repeat its
first or last frame. Windows never cross from one episode into the next.
"""
from __future__ import annotations

import numpy as np

from drifting_policy.data.replay_buffer import ReplayBuffer


def create_indices(episode_ends: np.ndarray, sequence_length: int, episode_mask: np.ndarray,
                   pad_before: int = 0, pad_after: int = 0) -> np.ndarray:
    """One row per window: (buffer_start, buffer_end, sample_start, sample_end).

    Frames ``buffer_start:buffer_end`` of the buffer fill positions ``sample_start:sample_end``
    of the window; positions before/after are padding.
    """
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)
    rows = []
    for i in np.flatnonzero(episode_mask):
        episode_start = int(episode_ends[i - 1]) if i > 0 else 0
        length = int(episode_ends[i]) - episode_start
        for start in range(-pad_before, length - sequence_length + pad_after + 1):
            first, last = max(start, 0), min(start + sequence_length, length)
            rows.append((episode_start + first, episode_start + last, first - start, last - start))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def get_val_mask(n_episodes: int, val_ratio: float, seed: int = 42) -> np.ndarray:
    """Boolean mask of validation episodes.

    With ``val_ratio > 0`` at least one episode is held out and at least one kept for
    training (when there are two or more), as in Diffusion Policy.
    """
    val_mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0:
        return val_mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    val_mask[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    return val_mask


def downsample_mask(mask: np.ndarray, max_n: int | None, seed: int = 42) -> np.ndarray:
    """Keep at most ``max_n`` of the selected episodes, chosen at random with ``seed``."""
    if max_n is None or mask.sum() <= max_n:
        return mask
    selected = np.flatnonzero(mask)
    keep = selected[np.random.default_rng(seed).choice(len(selected), size=int(max_n), replace=False)]
    result = np.zeros_like(mask)
    result[keep] = True
    return result


class SequenceSampler:
    """Cuts padded windows of ``sequence_length`` frames out of a replay buffer's episodes.

    ``key_first_k`` maps a key to k: only the first k frames of its window are read (e.g.
    observations, of which the policy uses the first ``n_obs_steps``); the rest of that key's
    window is NaN for float arrays and 0 otherwise, and must not be used.
    """

    def __init__(self, replay_buffer: ReplayBuffer, sequence_length: int, pad_before: int = 0,
                 pad_after: int = 0, keys: list[str] | None = None,
                 key_first_k: dict[str, int] | None = None, episode_mask: np.ndarray | None = None):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        episode_ends = replay_buffer.episode_ends
        if episode_mask is None:
            episode_mask = np.ones(len(episode_ends), dtype=bool)
        episode_mask = np.asarray(episode_mask, dtype=bool)
        if episode_mask.shape != episode_ends.shape:
            raise ValueError(
                f"episode_mask has shape {episode_mask.shape}, expected ({len(episode_ends)},): "
                "one entry per episode of the replay buffer"
            )
        self.keys = list(replay_buffer.keys() if keys is None else keys)
        missing = [k for k in self.keys if k not in replay_buffer]
        if missing:
            raise KeyError(f"SequenceSampler: keys {missing} not in replay buffer keys {replay_buffer.keys()}")
        self.replay_buffer = replay_buffer
        self.sequence_length = sequence_length
        self.key_first_k = dict(key_first_k or {})
        self.indices = create_indices(episode_ends, sequence_length, episode_mask, pad_before, pad_after)

    def __len__(self) -> int:
        return len(self.indices)

    def sample_sequence(self, idx: int) -> dict[str, np.ndarray]:
        buffer_start, buffer_end, sample_start, sample_end = self.indices[idx]
        return {key: self._window(key, buffer_start, buffer_end, sample_start, sample_end) for key in self.keys}

    def _window(self, key: str, buffer_start: int, buffer_end: int, sample_start: int, sample_end: int) -> np.ndarray:
        source = self.replay_buffer[key]
        window = np.empty((self.sequence_length, *source.shape[1:]), dtype=source.dtype)
        # Positions [0, n_read) of the window are filled; with key_first_k the rest is skipped.
        n_read = min(self.key_first_k.get(key, self.sequence_length), self.sequence_length)
        if n_read < self.sequence_length:
            window[n_read:] = np.nan if np.issubdtype(source.dtype, np.floating) else 0
        inner_end = min(sample_end, n_read)
        window[:min(sample_start, n_read)] = source[buffer_start]
        if inner_end > sample_start:
            window[sample_start:inner_end] = source[buffer_start:buffer_start + inner_end - sample_start]
        if n_read > sample_end:
            window[sample_end:n_read] = source[buffer_end - 1]
        return window
