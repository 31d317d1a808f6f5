"""Episodes stored the way Diffusion Policy stores them.

A replay buffer is a set of arrays that all episodes share, concatenated along time:

    data/<key>          (n_steps, ...)   every episode's frames, one after the other
    meta/episode_ends   (n_episodes,)    int64 cumulative end index of each episode

In memory the arrays are plain numpy with spare capacity, so appending an episode is
amortised O(episode). On disk the layout is a zarr *format 2* group (a directory, or a
``.zarr.zip`` file) that Diffusion Policy's own zarr-2 code reads unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.storage import ZipStore

from drifting.files import atomic_path
from drifting_policy.errors import DataError

# Diffusion Policy writes its datasets with this compressor; keeping it means their tools
# (and zarr 2 with any numcodecs version) decode our files.
DEFAULT_COMPRESSOR = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
# Without an explicit chunk length, chunks hold about this many bytes.
TARGET_CHUNK_BYTES = 4 * 2**20


def _open_group(path: Path, mode: str) -> tuple[zarr.Group, ZipStore | None]:
    """Open a zarr group stored as a directory or as a .zip file."""
    if path.suffix == ".zip":
        store = ZipStore(path, mode=mode)
        return zarr.open_group(store, mode=mode, zarr_format=2 if mode == "w" else None), store
    return zarr.open_group(str(path), mode=mode, zarr_format=2 if mode == "w" else None), None


class ReplayBuffer:
    """Episodes of named arrays, concatenated along time, with DP's zarr layout on disk."""

    def __init__(self):
        self._data: dict[str, np.ndarray] = {}  # key -> array with spare rows past n_steps
        self._episode_ends: list[int] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def create_empty(cls) -> ReplayBuffer:
        return cls()

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], episode_ends) -> ReplayBuffer:
        """Wrap already-concatenated arrays (no copy) with their cumulative episode ends."""
        ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
        if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            raise ValueError(f"episode_ends must be strictly increasing positive indices, got {ends.tolist()}")
        n_steps = int(ends[-1]) if len(ends) else 0
        buffer = cls()
        for key, array in data.items():
            array = np.asarray(array)
            if array.ndim == 0 or len(array) != n_steps:
                raise ValueError(f"{key!r} has shape {array.shape}; episode_ends says there are {n_steps} steps")
            buffer._data[key] = array
        buffer._episode_ends = ends.tolist()
        return buffer

    @classmethod
    def copy_from_path(cls, path: str | os.PathLike, keys: list[str] | None = None) -> ReplayBuffer:
        """Load a zarr directory or ``.zarr.zip`` into memory; ``keys`` selects data keys."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"replay buffer not found: {path}")
        try:
            return cls._read(path, keys)
        except (ValueError, KeyError):
            raise
        except Exception as error:  # zip, zarr and codec errors of a damaged file
            raise DataError(f"{path}: not a readable replay buffer ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from error

    @classmethod
    def _read(cls, path: Path, keys: list[str] | None) -> ReplayBuffer:
        group, store = _open_group(path, mode="r")
        try:
            if "data" not in group or "meta" not in group or "episode_ends" not in group["meta"]:
                raise ValueError(
                    f"{path} is not a replay buffer: expected groups 'data' and 'meta/episode_ends', "
                    f"found {sorted(group.keys())}"
                )
            available = sorted(group["data"].keys())
            keys = available if keys is None else list(keys)
            unknown = [k for k in keys if k not in available]
            if unknown:
                raise ValueError(f"{path}: unknown data key(s) {unknown}; available keys: {available}")
            arrays = {key: group["data"][key][:] for key in keys}
            try:
                return cls.from_arrays(arrays, group["meta"]["episode_ends"][:])
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        finally:
            if store is not None:
                store.close()

    # ------------------------------------------------------------------ sizes
    @property
    def n_episodes(self) -> int:
        return len(self._episode_ends)

    @property
    def n_steps(self) -> int:
        return self._episode_ends[-1] if self._episode_ends else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self._episode_ends, dtype=np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0)

    # ------------------------------------------------------------------ access
    def keys(self) -> list[str]:
        return list(self._data.keys())

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> np.ndarray:
        """All frames of ``key`` (a view; copy it before changing it)."""
        if key not in self._data:
            raise KeyError(f"replay buffer has no key {key!r}; available keys: {self.keys()}")
        return self._data[key][: self.n_steps]

    def first_non_finite(self, key: str) -> tuple[int, int, float] | None:
        """(episode, step within it, value) of the first NaN or inf in ``key``, or None (integer arrays, such as
        uint8 images, always pass)."""
        array = self[key]
        if not np.issubdtype(array.dtype, np.floating):
            return None
        frames = array.reshape(len(array), -1)
        bad_frames = ~np.isfinite(frames).all(axis=1)
        if not bad_frames.any():
            return None
        index = int(np.argmax(bad_frames))
        episode = int(np.searchsorted(self.episode_ends, index, side="right"))
        start = self._episode_ends[episode - 1] if episode > 0 else 0
        value = frames[index][~np.isfinite(frames[index])][0]
        return episode, index - start, float(value)

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for a buffer with {self.n_episodes} episodes")
        i = i % self.n_episodes
        start = self._episode_ends[i - 1] if i > 0 else 0
        return slice(start, self._episode_ends[i])

    def get_episode(self, i: int) -> dict[str, np.ndarray]:
        """Episode ``i`` as ``{key: array}`` (views into the buffer)."""
        s = self.episode_slice(i)
        return {key: array[s] for key, array in self._data.items()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {a.shape[1:]} {a.dtype}" for k, a in self._data.items())
        return f"ReplayBuffer(n_episodes={self.n_episodes}, n_steps={self.n_steps}, {{{fields}}})"

    # ------------------------------------------------------------------ writing
    def add_episode(self, data: dict[str, np.ndarray]) -> None:
        """Append one episode; every array has the same length T > 0 along axis 0."""
        if not data:
            raise ValueError("add_episode needs a non-empty dict of arrays")
        episode = {key: np.asarray(value) for key, value in data.items()}
        lengths = {key: (a.shape[0] if a.ndim > 0 else None) for key, a in episode.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ValueError(f"add_episode: all arrays need the same length along axis 0, got {lengths}")
        length = next(iter(lengths.values()))
        if length == 0:
            raise ValueError("add_episode: episode has 0 steps; episodes need at least one step")
        if self._data and set(episode) != set(self._data):
            raise ValueError(
                f"add_episode: keys {sorted(episode)} differ from the buffer's keys {sorted(self._data)}"
            )
        for key, array in episode.items():
            if key in self._data:
                stored = self._data[key]
                if array.shape[1:] != stored.shape[1:] or array.dtype != stored.dtype:
                    raise ValueError(
                        f"add_episode: {key!r} has per-step shape {array.shape[1:]} and dtype {array.dtype}; "
                        f"the buffer holds {stored.shape[1:]} {stored.dtype}"
                    )

        start = self.n_steps
        end = start + length
        for key, array in episode.items():
            if key not in self._data:
                self._data[key] = np.empty((0, *array.shape[1:]), dtype=array.dtype)
            if end > len(self._data[key]):
                self._grow(key, end)
            self._data[key][start:end] = array
        self._episode_ends.append(end)

    def _grow(self, key: str, min_rows: int) -> None:
        """Double the capacity of one key (at least to ``min_rows``), keeping its frames."""
        old = self._data[key]
        new = np.empty((max(min_rows, 2 * len(old)), *old.shape[1:]), dtype=old.dtype)
        new[: self.n_steps] = old[: self.n_steps]
        self._data[key] = new

    def save_to_path(self, path: str | os.PathLike, chunk_length: int | None = None) -> Path:
        """Write a zarr format-2 store (a directory, or a zip file when ``path`` ends in .zip).

        The store is written under a temporary name next to ``path`` and then renamed, so a
        reader never sees a half-written dataset. ``chunk_length`` is the number of frames
        per chunk (default: about 4 MiB per chunk, per key).
        """
        if self.n_episodes == 0:
            raise ValueError(f"refusing to save an empty replay buffer to {path}")
        path = Path(path)
        with atomic_path(path) as tmp:
            group, store = _open_group(tmp, mode="w")
            try:
                data = group.require_group("data")
                for key in self.keys():
                    array = self[key]
                    rows = chunk_length or max(1, TARGET_CHUNK_BYTES // max(1, array[:1].nbytes))
                    chunks = (min(rows, len(array)), *array.shape[1:])
                    data.create_array(key, shape=array.shape, chunks=chunks, dtype=array.dtype,
                                      compressors=DEFAULT_COMPRESSOR)[...] = array
                meta = group.require_group("meta")
                ends = self.episode_ends
                meta.create_array("episode_ends", shape=ends.shape, chunks=ends.shape, dtype=np.int64,
                                  compressors=None)[...] = ends
            finally:
                if store is not None:
                    store.close()
        return path
