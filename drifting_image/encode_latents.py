"""Encode an ImageNet-layout image folder into cached VAE latents for latent-space training.

The folder holds one subfolder of images per class; the classes are the sorted subfolder names and class i gets
label i (ImageNet's ``train`` folder gives the standard 1000-class order). Each image is converted to RGB,
center-cropped and resized to --size as ADM and DiT do (halve with a box filter while the short side is at least
twice the size, bicubic resize of the short side to the size, center crop), scaled to [-1, 1] and encoded by the
VAE (see ``drifting_image.vae``: a posterior draw times the scaling factor).

The output folder is what ``drifting_image.data`` memory-maps for training:
- ``images.npy``: [N, C, size/f, size/f] float32 latents (SD-VAE at 256: [N, 4, 32, 32]);
- ``images_flip.npy``: the same for the horizontally mirrored images, with the same posterior draw (the released
  cache's ``moments_flip``; training takes one of the two at random per sample);
- ``labels.npy``: [N] int64, written last, so an interrupted run leaves a folder that does not load;
- ``class_names.txt``: the class folder names, one per line, in label order.

    python -m drifting_image.encode_latents /data/imagenet/train --vae /models/sd-vae-ft-mse \\
        --out data/imagenet256_latents
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from drifting_image.data import load_dataset
from drifting_image.fid import IMAGE_SUFFIXES
from drifting_image.vae import encode, load_vae


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's center crop: [size, size, C] uint8 from a PIL image of any size."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top: top + size, left: left + size]


def list_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image files, their labels, class names) of a folder with one subfolder of images per class."""
    root = Path(root)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(class_names):
        images = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += images
        labels += [label] * len(images)
    if not files:
        raise FileNotFoundError(f"{root} has no class subfolders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files, np.array(labels, dtype=np.int64), class_names


class CroppedImages(torch.utils.data.Dataset):
    """Image files as [3, size, size] float tensors in [-1, 1] (read in DataLoader workers)."""

    def __init__(self, files: list[Path], size: int):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            pixels = center_crop_arr(image.convert("RGB"), self.size)
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0


def encode_folder(
    root: str | Path, vae_folder: str | Path, out: str | Path, *, size: int = 256, batch_size: int = 64,
    workers: int = 4, seed: int = 0, device: torch.device | str = "cpu",
) -> Path:
    """Encode every image under ``root`` into the latent folder ``out`` (see the module docstring)."""
    files, labels, class_names = list_image_folder(root)
    vae = load_vae(vae_folder, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.npy").unlink(missing_ok=True)  # written again last: the folder loads only once complete
    (out / "class_names.txt").write_text("".join(f"{name}\n" for name in class_names))
    loader = torch.utils.data.DataLoader(CroppedImages(files, size), batch_size=batch_size, num_workers=workers)
    rng = torch.Generator().manual_seed(seed)
    latents, start = {}, 0
    for images in tqdm(loader, desc="encoding", unit="batch"):
        draw = rng.get_state()
        z = encode(vae, images, rng).numpy()
        rng.set_state(draw)  # the mirrored image takes the same posterior noise, as in the released cache
        z_flip = encode(vae, images.flip(-1), rng).numpy()
        for name, batch in (("images.npy", z), ("images_flip.npy", z_flip)):
            if name not in latents:
                latents[name] = np.lib.format.open_memmap(out / name, mode="w+", dtype=np.float32,
                                                          shape=(len(files), *batch.shape[1:]))
            latents[name][start: start + len(batch)] = batch
        start += len(z)
    for array in latents.values():
        array.flush()
    np.save(out / "labels.npy", labels)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image encode-latents", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image_folder", help="folder with one subfolder of images per class")
    parser.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse)")
    parser.add_argument("--out", required=True, help="output folder (images.npy, labels.npy, class_names.txt)")
    parser.add_argument("--size", type=int, default=256, help="image side after the center crop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader processes reading the images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = encode_folder(args.image_folder, args.vae, args.out, size=args.size, batch_size=args.batch_size,
                        workers=args.workers, seed=args.seed, device=device)
    dataset = load_dataset(str(out))
    print(f"wrote {len(dataset)} latents of shape {list(dataset.sample_shape)} with labels 0..{dataset.labels.max()} "
          f"to {out}")


if __name__ == "__main__":
    main()
