"""One-step sampling from a trained generator: PNG grids and an ``.npz`` of uint8 images.

The ``.npz`` follows the ADM evaluation layout: ``arr_0`` [N, H, W, C] uint8 (and ``arr_1`` the labels).
Pixel-space samples in [-1, 1] are mapped to uint8; latent-space samples need a VAE decoder first, which this
package does not include.

    python -m drifting_image.sample runs/mnist/checkpoint.pt --num 1000 --alpha 1.5 --out runs/mnist/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from drifting import checkpoint
from drifting_image.generator import DriftingDiT, build_generator


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> [N, H, W, C] uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path: str | Path, ncol: int = 10, pad: int = 2) -> None:
    """Tile [N, C, H, W] images in [-1, 1] (C = 1 or 3) into one PNG, ``ncol`` per row."""
    pixels = to_uint8(images)
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
    for chunk in labels.split(batch_size):
        noise = torch.randn(len(chunk), *generator.sample_shape, generator=rng)
        style = generator.draw_style(len(chunk), rng=rng)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            x = generator(noise.to(device), chunk.to(device), alpha, style.to(device))
        out.append(x.float().cpu())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--num", type=int, default=1000, help="number of samples, classes in equal turns")
    parser.add_argument("--alpha", type=float, default=1.0, help="CFG scale (1 = no guidance)")
    parser.add_argument("--out", default=None, help="output folder (default: next to the checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = load_generator(args.checkpoint, use_ema=not args.raw)
    labels = torch.arange(args.num) % generator.num_classes
    images = generate(generator, labels, args.alpha, seed=args.seed, device=device)
    out = Path(args.out or Path(args.checkpoint).parent / "samples")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"alpha{args.alpha:g}"
    np.savez(out / f"{stem}.npz", arr_0=to_uint8(images), arr_1=labels.numpy())
    order = torch.argsort(labels[: 10 * generator.num_classes], stable=True)
    save_grid(images[order], out / f"{stem}.png", ncol=10)
    print(f"wrote {len(images)} samples to {out / f'{stem}.npz'} and a grid to {out / f'{stem}.png'}")


if __name__ == "__main__":
    main()
