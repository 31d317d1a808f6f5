"""Read and write robomimic's hdf5 demonstration files (with h5py only).

Layout (robomimic's ``docs/datasets/overview.md``)::

    data                      attrs: total (int, all samples), env_args (JSON: env_name, type, env_kwargs)
    data/demo_<i>             attrs: num_samples (int), optionally model_file and others
    data/demo_<i>/obs/<key>         (T, ...)
    data/demo_<i>/next_obs/<key>    (T, ...)
    data/demo_<i>/actions           (T, A)
    data/demo_<i>/states            (T, S)   flattened simulator state
    data/demo_<i>/rewards, dones    (T,)
    mask/<filter>             bytes array of demo names, e.g. mask/train, mask/valid

A demo in memory is a dict with ``obs`` (and optionally ``next_obs``) mapping keys to
arrays, ``actions``, optionally ``states``, ``rewards``, ``dones``, and ``attrs`` (per-demo
hdf5 attributes such as robosuite's ``model_file``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from drifting.files import atomic_path
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.rotation import axis_angle_action_to_rot6d
from drifting_policy.errors import DataError

OBS_GROUPS = ("obs", "next_obs")
PER_STEP_ARRAYS = ("actions", "states", "rewards", "dones")


def _demo_index(name: str) -> int:
    match = re.fullmatch(r"demo_(\d+)", name)
    return int(match.group(1)) if match else -1


def _check_demo(i: int, demo: dict) -> int:
    """Validate one demo dict; returns its number of samples."""
    where = f"demo {i}"
    for required in ("obs", "actions"):
        if required not in demo:
            raise ValueError(f"{where}: missing {required!r}; a demo needs 'obs' and 'actions'")
    unknown = set(demo) - set(OBS_GROUPS) - set(PER_STEP_ARRAYS) - {"attrs"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}; expected {OBS_GROUPS + PER_STEP_ARRAYS} "
                         "and 'attrs'")
    length = len(demo["actions"])
    if length == 0:
        raise ValueError(f"{where}: 'actions' is empty; a demo needs at least one step")
    arrays = {name: demo[name] for name in PER_STEP_ARRAYS if name in demo}
    arrays.update({f"{group}/{key}": value for group in OBS_GROUPS for key, value in demo.get(group, {}).items()})
    for name, value in arrays.items():
        if len(value) != length:
            raise ValueError(f"{where}: {name!r} has {len(value)} steps, 'actions' has {length}")
    return length


def write_robomimic_hdf5(path: str | os.PathLike, demos: list[dict], env_args: dict,
                         masks: dict[str, list[str]] | None = None, compression: str | None = None) -> Path:
    """Write ``demos`` as ``data/demo_0 ... demo_{n-1}`` (atomically: temp file, then rename).

    ``env_args`` is stored as the JSON attribute ``data.env_args``; ``masks`` maps a filter
    name to demo names (``{"train": ["demo_0", ...], "valid": [...]}``). ``compression``
    (e.g. "gzip") applies to observation arrays.
    """
    path = Path(path)
    if not demos:
        raise ValueError(f"no demos to write to {path}")
    missing = {"env_name", "type", "env_kwargs"} - set(env_args)
    if missing:
        raise ValueError(f"env_args needs keys env_name, type, env_kwargs; missing {sorted(missing)}")
    lengths = [_check_demo(i, demo) for i, demo in enumerate(demos)]
    names = [f"demo_{i}" for i in range(len(demos))]
    for filter_key, members in (masks or {}).items():
        unknown = sorted(set(members) - set(names))
        if unknown:
            raise ValueError(f"mask {filter_key!r} names demos {unknown} that are not among {names[0]}..{names[-1]}")

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for name, demo, length in zip(names, demos, lengths, strict=True):
            group = data.create_group(name)
            for field in PER_STEP_ARRAYS:
                if field in demo:
                    group.create_dataset(field, data=np.asarray(demo[field]))
            for obs_group in OBS_GROUPS:
                for key, value in demo.get(obs_group, {}).items():
                    group.create_dataset(f"{obs_group}/{key}", data=np.asarray(value), compression=compression)
            group.attrs["num_samples"] = length
            for attr, value in demo.get("attrs", {}).items():
                group.attrs[attr] = value
        data.attrs["total"] = sum(lengths)
        data.attrs["env_args"] = json.dumps(env_args, indent=4)
        for filter_key, members in (masks or {}).items():
            f.create_dataset(f"mask/{filter_key}", data=np.array(members, dtype="S"))
    return path


class RobomimicReader:
    """Read access to a robomimic hdf5 file; each call opens the file briefly."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"robomimic hdf5 not found: {self.path}")
        with h5py.File(self.path, "r") as f:
            if "data" not in f:
                raise ValueError(f"{self.path} is not a robomimic dataset: no 'data' group")
            if "env_args" not in f["data"].attrs:
                raise ValueError(f"{self.path}: the 'data' group has no 'env_args' attribute")
            self.env_meta: dict = json.loads(f["data"].attrs["env_args"])
            self.total = int(f["data"].attrs.get("total", -1))
            self.filter_keys: list[str] = sorted(f["mask"].keys()) if "mask" in f else []

    def demo_names(self, filter_key: str | None = None) -> list[str]:
        """Demo names ordered by index (demo_2 before demo_10), optionally one filter's."""
        with h5py.File(self.path, "r") as f:
            if filter_key is None:
                names = list(f["data"].keys())
            elif filter_key not in self.filter_keys:
                raise ValueError(f"{self.path}: no filter key {filter_key!r}; filter keys: {self.filter_keys}")
            else:
                names = [name.decode("utf-8") for name in f[f"mask/{filter_key}"][:]]
        return sorted(names, key=lambda name: (_demo_index(name), name))

    def get_demo(self, name: str) -> dict:
        """One demo as a dict (see the module docstring); arrays are read into memory."""
        with h5py.File(self.path, "r") as f:
            if name not in f["data"]:
                raise KeyError(f"{self.path}: no demo {name!r}")
            group = f["data"][name]
            demo = {field: group[field][:] for field in PER_STEP_ARRAYS if field in group}
            for obs_group in OBS_GROUPS:
                if obs_group in group:
                    demo[obs_group] = {key: group[obs_group][key][:] for key in group[obs_group]}
            demo["attrs"] = dict(group.attrs)
        return demo

    def to_replay_buffer(self, obs_keys: list[str], action_key: str = "actions", filter_key: str | None = None,
                         abs_action: bool = False, rotation_rep: str = "rotation_6d") -> ReplayBuffer:
        """Episodes of ``obs_keys`` (each stored under its own name) and ``action`` (float32).

        With ``abs_action`` the raw absolute actions (pos + axis-angle + gripper per arm) become
        pos + 6-D rotation + gripper, as Diffusion Policy trains on them. Low-dim observations
        become float32; images keep their dtype.
        """
        if rotation_rep != "rotation_6d":
            raise ValueError(f"rotation_rep {rotation_rep!r} is not supported; use 'rotation_6d'")
        buffer = ReplayBuffer.create_empty()
        names = self.demo_names(filter_key)
        with h5py.File(self.path, "r") as f:
            for name in names:
                group = f["data"][name]
                missing = [key for key in obs_keys if key not in group.get("obs", {})]
                if missing or action_key not in group:
                    available = sorted(group["obs"].keys()) if "obs" in group else []
                    lacking = f"obs keys {missing}" if missing else repr(action_key)
                    raise ValueError(f"{self.path}: data/{name} lacks {lacking}; obs keys present: {available}")
                actions = group[action_key][:].astype(np.float32)
                if abs_action:
                    actions = axis_angle_action_to_rot6d(actions)
                episode = {key: _as_stored(group["obs"][key][:]) for key in obs_keys}
                episode["action"] = actions
                buffer.add_episode(episode)
        for key in buffer.keys():  # noqa: SIM118  (a ReplayBuffer is not iterable)
            found = buffer.first_non_finite(key)
            if found is not None:
                demo, step, value = found
                stored = action_key if key == "action" else f"obs/{key}"
                raise DataError(f"{self.path}: data/{names[demo]}/{stored} holds {value} at step {step} (its first "
                                "non-finite value); the data must be finite to train on")
        return buffer


def _as_stored(array: np.ndarray) -> np.ndarray:
    return array if array.dtype == np.uint8 else array.astype(np.float32)
