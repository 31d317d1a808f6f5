"""Crash-safe checkpoint files and the global random state they carry, shared by both branches."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from drifting.files import atomic_path


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used: unreadable, truncated, or holding non-finite weights.
    The message names the file (and the tensor)."""


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save under a temporary name in the same folder, then rename: a crash never leaves a torn file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint of ours. It holds numpy and python random states besides tensors, hence
    weights_only=False: load only checkpoints you trust, as with any pickle. A damaged file raises
    ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # a truncated or corrupted file fails anywhere in zip reading or unpickling
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found a {type(state).__name__}")
    return state


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for name, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def check_finite_weights(tensors: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise ``CheckpointError`` naming ``source`` and the tensor when loaded weights hold NaN or inf (a damaged
    file loads without complaint but makes every action NaN)."""
    name = first_non_finite(tensors)
    if name is not None:
        value = tensors[name]
        bad = int((~torch.isfinite(value)).sum())
        raise CheckpointError(f"{source}: weights {name!r} hold {bad} non-finite value(s) of {value.numel()}; "
                              "the file is damaged or the run diverged")


def rng_state() -> dict:
    """The global random states of torch (CPU and CUDA), numpy and python."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
