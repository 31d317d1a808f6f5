"""Training windows from a replay buffer, in Diffusion Policy's batch format.

Two ways to say what the observation is:

* ``obs_keys`` (low-dim): a list of *key specs*; each frame of each key is flattened and the
  pieces are concatenated into ``obs`` (T, Do). A key spec is a replay-buffer key with an
  optional slice of the flattened frame: ``"keypoint"`` (N, 9, 2) gives 18 values,
  ``"state[:2]"`` the first two of ``state``'s. PushT low-dim is
  ``obs_keys=["keypoint", "state[:2]"]`` (20-D).
* ``shape_meta`` (DP's format): ``{'obs': {'image': {'shape': [3, 96, 96], 'type': 'rgb'},
  'agent_pos': {'shape': [2], 'type': 'low_dim'}}, 'action': {'shape': [2]}}`` with
  ``zarr_keys`` mapping an obs name to its key spec (default: the same name), e.g.
  ``{'image': 'img', 'agent_pos': 'state[:2]'}``. Images are stored (N, H, W, 3) uint8 and
  come out float (To, 3, H, W) in [0, 1].

Items are ``{'obs': (T, Do), 'action': (T, Da)}`` or ``{'obs': {name: (To, ...)}, 'action': (T, Da)}``,
float32 tensors. With ``n_obs_steps`` set, observations are cut to their first
``n_obs_steps`` frames (and only those are read); otherwise they span the horizon.

Every array read is checked on load: a NaN or inf stops with ``DataError`` naming the key, the episode and the
step of the first one.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.sampler import SequenceSampler, downsample_mask, get_val_mask
from drifting_policy.errors import DataError
from drifting_policy.normalizer import (
    LinearNormalizer,
    SingleFieldLinearNormalizer,
    array_to_stats,
    get_abs_action_normalizer_from_stat,
    get_identity_normalizer_from_stat,
    get_image_range_normalizer,
)

# How a low-dim field or the action is normalised (see ``_fit_field``).
NORMALIZER_MODES = ("limits", "identity", "max_abs", "abs_action", "limits_except_quat")


@dataclass(frozen=True)
class KeySpec:
    """A replay-buffer key, optionally with a slice of its flattened frames: ``state[:2]``."""

    key: str
    start: int | None = None
    stop: int | None = None
    sliced: bool = False

    @classmethod
    def parse(cls, spec: str) -> KeySpec:
        match = re.fullmatch(r"([^\[\]]+)(?:\[(-?\d*):(-?\d*)\])?", spec.strip())
        if match is None:
            raise ValueError(f"bad key spec {spec!r}; expected 'key' or 'key[start:stop]'")
        key, start, stop = match.groups()
        return cls(key, int(start) if start else None, int(stop) if stop else None, sliced="[" in spec)

    def __str__(self) -> str:
        if not self.sliced:
            return self.key
        return f"{self.key}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"

    def read_flat(self, buffer: ReplayBuffer) -> np.ndarray:
        """(N, D) float32: every frame flattened, then sliced."""
        array = buffer[self.key]
        return array.reshape(len(array), -1)[:, self.start:self.stop].astype(np.float32)


class SequenceDataset(Dataset):
    """Padded windows of ``horizon`` frames from a zarr replay buffer (a path or a ReplayBuffer).

    Episodes are split into train/validation with ``get_val_mask(val_ratio, seed)`` and the
    training episodes capped at ``max_train_episodes``; as in Diffusion Policy the validation
    set is every episode not used for training. ``obs_normalizer`` / ``action_normalizer``
    pick how ``get_normalizer`` treats low-dim observations and actions:
    'limits' (fit to [-1, 1] per dimension), 'identity', 'max_abs' (one scale for all
    dimensions, DP's robomimic low-dim observations), 'abs_action' (DP's absolute robomimic
    actions: positions to [-1, 1], 6-D rotation and gripper unchanged) or
    'limits_except_quat' (``*quat`` keys unchanged, others 'limits'; DP's robomimic image runs).
    """

    def __init__(self, data: str | os.PathLike | ReplayBuffer, horizon: int = 1, pad_before: int = 0,
                 pad_after: int = 0, n_obs_steps: int | None = None, obs_keys: list[str] | None = None,
                 shape_meta: dict | None = None, zarr_keys: dict[str, str] | None = None,
                 action_key: str = "action", val_ratio: float = 0.0, seed: int = 42,
                 max_train_episodes: int | None = None, obs_normalizer: str = "limits",
                 action_normalizer: str = "limits"):
        super().__init__()
        self.source = "in-memory replay buffer" if isinstance(data, ReplayBuffer) else str(data)
        if (obs_keys is None) == (shape_meta is None):
            raise ValueError(f"{self.source}: give exactly one of obs_keys (low-dim) or shape_meta")
        for name, mode in (("obs_normalizer", obs_normalizer), ("action_normalizer", action_normalizer)):
            if mode not in NORMALIZER_MODES:
                raise ValueError(f"{name} must be one of {NORMALIZER_MODES}, got {mode!r}")
        if n_obs_steps is not None and not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"n_obs_steps must be in [1, horizon={horizon}], got {n_obs_steps}")
        self.horizon, self.pad_before, self.pad_after = horizon, pad_before, pad_after
        self.n_obs_steps = n_obs_steps
        self.shape_meta = shape_meta
        self.obs_normalizer, self.action_normalizer = obs_normalizer, action_normalizer

        # What to read: one spec per output field.
        self.action_spec = KeySpec.parse(action_key)
        if shape_meta is None:
            self.obs_specs = {"obs": [KeySpec.parse(k) for k in obs_keys]}
            self.obs_types = {"obs": "low_dim"}
        else:
            zarr_keys = dict(zarr_keys or {})
            obs_meta = shape_meta.get("obs", {})
            unknown = sorted(set(zarr_keys) - set(obs_meta))
            if unknown:
                raise ValueError(f"zarr_keys names {unknown}, which are not in shape_meta['obs'] {sorted(obs_meta)}")
            self.obs_specs = {name: [KeySpec.parse(zarr_keys.get(name, name))] for name in obs_meta}
            self.obs_types = {name: meta.get("type", "low_dim") for name, meta in obs_meta.items()}
        needed = sorted({spec.key for specs in self.obs_specs.values() for spec in specs} | {self.action_spec.key})

        source = data if isinstance(data, ReplayBuffer) else ReplayBuffer.copy_from_path(data, keys=needed)
        if source.n_episodes == 0:
            raise ValueError(f"{self.source}: the replay buffer has no episodes")
        missing = [key for key in needed if key not in source]
        if missing:
            raise ValueError(f"{self.source}: unknown data key(s) {missing}; available keys: {sorted(source.keys())}")
        check_finite(source, needed, self.source)
        self.replay_buffer = ReplayBuffer.from_arrays(self._fields(source), source.episode_ends)

        val_mask = get_val_mask(source.n_episodes, val_ratio, seed=seed)
        self.train_mask = downsample_mask(~val_mask, max_train_episodes, seed=seed)
        self.sampler = self._sampler(self.train_mask)
        if len(self.sampler) == 0:
            raise ValueError(
                f"{self.source}: no training windows ({int(self.train_mask.sum())} training episodes of "
                f"{source.n_episodes}, horizon {horizon}, pad_before {pad_before}, pad_after {pad_after})"
            )

    # ------------------------------------------------------------------ building
    def _fields(self, source: ReplayBuffer) -> dict[str, np.ndarray]:
        """The arrays windows are cut from: one per obs field, plus 'action'."""
        fields = {}
        for name, specs in self.obs_specs.items():
            if self.obs_types[name] == "rgb":
                fields[name] = self._image_field(name, specs[0], source)
            elif self.obs_types[name] == "low_dim":
                flat = np.concatenate([spec.read_flat(source) for spec in specs], axis=1)
                fields[name] = self._shaped(name, specs, flat, source)
            else:
                raise ValueError(f"shape_meta['obs'][{name!r}] has type {self.obs_types[name]!r}; "
                                 "expected 'rgb' or 'low_dim'")
        fields["action"] = self._shaped("action", [self.action_spec], self.action_spec.read_flat(source), source)
        return fields

    def _shaped(self, name: str, specs: list[KeySpec], flat: np.ndarray, source: ReplayBuffer) -> np.ndarray:
        """Check a low-dim field against shape_meta (when given) and reshape it."""
        if self.shape_meta is None:
            return flat
        meta = self.shape_meta["action"] if name == "action" else self.shape_meta["obs"][name]
        shape = tuple(meta["shape"])
        if flat.shape[1] != int(np.prod(shape)):
            stored = {str(spec): source[spec.key].shape[1:] for spec in specs}
            raise ValueError(
                f"{self.source}: {name!r} expects shape {list(shape)} but key(s) {list(stored)} give "
                f"{flat.shape[1]} values per step (stored per-step shapes {list(stored.values())})"
            )
        return flat.reshape(len(flat), *shape)

    def _image_field(self, name: str, spec: KeySpec, source: ReplayBuffer) -> np.ndarray:
        images = source[spec.key]
        channels, height, width = self.shape_meta["obs"][name]["shape"]
        if spec.sliced or images.shape[1:] != (height, width, channels):
            raise ValueError(
                f"{self.source}: image {name!r} expects key {spec.key!r} of per-step shape "
                f"(H, W, C) = {(height, width, channels)} for shape_meta {[channels, height, width]}, "
                f"got {images.shape[1:]}"
            )
        return images

    def _sampler(self, episode_mask: np.ndarray) -> SequenceSampler:
        obs_first_k = {} if self.n_obs_steps is None else dict.fromkeys(self.obs_specs, self.n_obs_steps)
        return SequenceSampler(self.replay_buffer, sequence_length=self.horizon, pad_before=self.pad_before,
                               pad_after=self.pad_after, key_first_k=obs_first_k, episode_mask=episode_mask)

    # ------------------------------------------------------------------ Dataset
    def get_validation_dataset(self) -> SequenceDataset:
        val_set = copy.copy(self)
        val_set.train_mask = ~self.train_mask
        val_set.sampler = self._sampler(val_set.train_mask)
        return val_set

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, idx: int) -> dict:
        window = self.sampler.sample_sequence(idx)
        to = self.n_obs_steps or self.horizon
        obs = {name: self._obs_tensor(name, window[name][:to]) for name in self.obs_specs}
        return {"obs": obs["obs"] if self.shape_meta is None else obs,
                "action": torch.from_numpy(window["action"])}

    def _obs_tensor(self, name: str, frames: np.ndarray) -> torch.Tensor:
        if self.obs_types[name] != "rgb":
            return torch.from_numpy(frames)
        scale = 1 / 255 if frames.dtype == np.uint8 else 1.0
        return torch.from_numpy(np.moveaxis(frames, -1, -3).astype(np.float32) * np.float32(scale))

    def get_all_actions(self) -> torch.Tensor:
        return torch.from_numpy(self.replay_buffer["action"])

    # ------------------------------------------------------------------ normalisation
    def get_normalizer(self) -> LinearNormalizer:
        """Fitted on every episode (train and validation), as Diffusion Policy does."""
        normalizer = LinearNormalizer()
        normalizer["action"] = _fit_field(self.replay_buffer["action"], self.action_normalizer, "action")
        for name in self.obs_specs:
            if self.obs_types[name] == "rgb":
                normalizer[name] = get_image_range_normalizer()
            else:
                normalizer[name] = _fit_field(self.replay_buffer[name], self.obs_normalizer, name)
        return normalizer


def check_finite(buffer: ReplayBuffer, keys: list[str], source: str) -> None:
    """Every array the dataset reads must be finite: one NaN would make the normalizer NaN (every loss NaN), one
    inf would give its dimension a scale of 0 (the input silently ignored)."""
    for key in keys:
        found = buffer.first_non_finite(key)
        if found is not None:
            episode, step, value = found
            raise DataError(f"{source}: key {key!r} holds {value} at episode {episode}, step {step} (its first "
                            "non-finite value); the data must be finite to train on")


def _fit_field(array: np.ndarray, mode: str, name: str) -> SingleFieldLinearNormalizer:
    flat = array.reshape(len(array), -1)
    stat = array_to_stats(flat)
    if mode == "limits" or (mode == "limits_except_quat" and not name.endswith("quat")):
        return SingleFieldLinearNormalizer.create_fit(flat, mode="limits")
    if mode in ("identity", "limits_except_quat"):
        return get_identity_normalizer_from_stat(stat)
    if mode == "max_abs":
        max_abs = max(np.abs(stat["min"]).max(), np.abs(stat["max"]).max())
        scale = np.full_like(stat["max"], 1 / max_abs if max_abs > 0 else 1.0)
        return SingleFieldLinearNormalizer(scale, np.zeros_like(scale), stat)
    return get_abs_action_normalizer_from_stat(stat)
