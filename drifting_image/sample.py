"""One-step sampling from a trained generator: PNG grids and an ``.npz`` of uint8 images.

The ``.npz`` follows the ADM evaluation layout: ``arr_0`` [N, H, W, C] uint8 (and ``arr_1`` the labels).
Pixel-space samples in [-1, 1] are mapped to uint8 as the released code does (truncation); latent-space samples
are first decoded by the VAE given with ``--vae`` (a local diffusers AutoencoderKL folder, see
``drifting_image.vae``; the released models were evaluated with sd-vae-ft-mse). The PNG grid shows the first 100
samples sorted by class, ten per row (with 10 classes: one class per row). ``--release`` samples one of the
authors' released generators (a folder with metadata.json and ema_params.msgpack, see
``drifting_image.official``) instead of one of our checkpoints.

    python -m drifting_image.sample outputs/image/mnist/checkpoint.pt --num 1000 --alpha 1.5 \
        --out outputs/image/mnist/samples
    python -m drifting_image.sample outputs/image/latent_B2/checkpoint.pt --num 50000 --vae /models/sd-vae-ft-mse
    python -m drifting_image.sample --release /models/drifting/gen/latent_L_sota --vae /models/sd-vae-ft-mse \
        --classes 88,95 --alpha 1.0 --num 16 --out samples/latent_L_sota
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from drifting import checkpoint
from drifting_image.generator import DriftingDiT, build_generator
from drifting_image.official import load_release
from drifting_image.vae import decode, load_vae


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] generated images in [-1, 1] -> [N, H, W, C] uint8, in the released code's order of operations:
    clip((x + 1) / 2, 0, 1) * 255, truncated (not rounded), so that samples and FID inputs match theirs."""
    unit = ((images.float() + 1) / 2).clamp(0, 1)
    return (unit * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(pixels: np.ndarray, path: str | Path, ncol: int = 10, pad: int = 2) -> None:
    """Tile [N, H, W, C] uint8 images (C = 1 or 3) into one PNG, ``ncol`` per row."""
    n, h, w, c = pixels.shape
    nrow = -(-n // ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, image in enumerate(pixels):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = image
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, grid[..., 0] if c == 1 else grid)


def load_generator(path: str | Path, use_ema: bool = True) -> DriftingDiT:
    """The (EMA) generator of a checkpoint written by ``drifting_image.train``."""
    state = checkpoint.load(path)
    cfg = state["config"]
    generator = build_generator(cfg["generator"], num_classes=cfg["num_classes"], **cfg["generator_overrides"])
    generator.load_state_dict(state["ema"]["model"] if use_ema else state["generator"])
    return generator.eval()


@torch.no_grad()
def generate(
    generator: DriftingDiT, labels: torch.Tensor, alpha: float = 1.0, *, batch_size: int = 256,
    seed: int = 0, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One sample per label [N, C, H, W] (on the CPU), drawn in batches with reproducible noise."""
    rng = torch.Generator().manual_seed(seed)
    generator = generator.to(device)
    out = []
    for chunk in tqdm(labels.split(batch_size), desc=f"sampling alpha={alpha:g}", unit="batch", leave=False):
        noise = torch.randn(len(chunk), *generator.sample_shape, generator=rng)
        style = generator.draw_style(len(chunk), rng=rng)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            x = generator(noise.to(device), chunk.to(device), alpha, style.to(device))
        out.append(x.float().cpu())
    return torch.cat(out)


def sample_images(
    generator: DriftingDiT, num: int, alpha: float = 1.0, *, vae=None, seed: int = 0,
    device: torch.device | str = "cpu", decode_batch_size: int = 32, classes: list[int] | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """``num`` images [num, H, W, C] uint8, the classes (all, or ``classes``) in equal turns, and their labels
    [num]. Samples of a latent-space generator are decoded by ``vae`` (an AutoencoderKL from
    ``drifting_image.vae.load_vae``)."""
    pool = torch.arange(generator.num_classes) if classes is None else torch.tensor(classes)
    labels = pool[torch.arange(num) % len(pool)]
    samples = generate(generator, labels, alpha, seed=seed, device=device)
    if vae is None:
        if samples.shape[1] not in (1, 3):
            raise ValueError(f"the generator makes {samples.shape[1]}-channel latents: give the VAE that decodes "
                             "them (--vae <AutoencoderKL folder>)")
        return to_uint8(samples), labels
    if samples.shape[1] != vae.config.latent_channels:
        raise ValueError(f"the generator makes {samples.shape[1]}-channel samples but the VAE decodes "
                         f"{vae.config.latent_channels}-channel latents")
    chunks = tqdm(samples.split(decode_batch_size), desc="decoding", unit="batch", leave=False)
    return np.concatenate([to_uint8(decode(vae, chunk)) for chunk in chunks]), labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="checkpoint of drifting_image.train (or give --release)")
    parser.add_argument("--release", default=None, help="folder of a released generator (metadata.json, "
                        "ema_params.msgpack) to sample instead of a checkpoint")
    parser.add_argument("--classes", default=None, help="comma-separated class labels to sample (default: all)")
    parser.add_argument("--num", type=int, default=1000, help="number of samples, classes in equal turns")
    parser.add_argument("--alpha", type=float, default=1.0, help="CFG scale (1 = no guidance)")
    parser.add_argument("--out", default=None, help="output folder (default: next to the checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--vae", default=None, help="AutoencoderKL folder that decodes a latent-space generator")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.release is None):
        parser.error("give either a checkpoint or --release <folder>")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.release:
        generator, _ = load_release(args.release)
        if not isinstance(generator, DriftingDiT):
            parser.error(f"{args.release} holds a released MAE, not a generator")
    else:
        generator = load_generator(args.checkpoint, use_ema=not args.raw)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    if classes and not all(0 <= c < generator.num_classes for c in classes):
        parser.error(f"--classes must lie in [0, {generator.num_classes})")
    vae = load_vae(args.vae, device) if args.vae else None
    images, labels = sample_images(generator, args.num, args.alpha, vae=vae, seed=args.seed, device=device,
                                   classes=classes)
    out = Path(args.out or Path(args.checkpoint or args.release).parent / "samples")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"alpha{args.alpha:g}"
    np.savez(out / f"{stem}.npz", arr_0=images, arr_1=labels.numpy())
    order = torch.argsort(labels[:100], stable=True)
    save_grid(images[order.numpy()], out / f"{stem}.png", ncol=10)
    print(f"wrote {len(images)} samples to {out / f'{stem}.npz'} and a grid to {out / f'{stem}.png'}")


if __name__ == "__main__":
    main()
