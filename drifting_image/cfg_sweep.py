"""FID of one generator over a range of CFG scales alpha (paper B.3, Fig. 5).

For every alpha the same --num noises (classes in equal turns) go through the generator once each (1-NFE); the
images, decoded by --vae for a latent-space generator, are compared with the reference by FID (``drifting_image.fid``;
its Inception network has no logits, so there is no Inception Score). Because the noises are the same for every
alpha, the column ``change`` (the RMS pixel change, in [0, 1] units, of the first 1000 images against those of the
first alpha) shows how much guidance acts at all, apart from whether it helps. The table is printed and written to
``cfg_sweep.csv`` and ``cfg_sweep.json`` with a plot of FID against alpha, ``cfg_sweep.png``, in --out.

    python -m drifting_image.cfg_sweep outputs/image/mnist_tiny/checkpoint.pt --alphas 1 1.5 2 3 --num 5000 \\
        --reference mnist
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from drifting_image.fid import frechet_distance, inception_features, load_inception, reference_statistics, statistics
from drifting_image.generator import DriftingDiT
from drifting_image.sample import load_generator, sample_images
from drifting_image.vae import load_vae

CHANGE_SUBSET = 1000  # images kept from the first alpha for the change column (50k ImageNet images would not fit)


def fid_by_alpha(
    generator: DriftingDiT, alphas: list[float], num: int, reference: tuple[np.ndarray, np.ndarray], inception, *,
    vae=None, seed: int = 0, batch_size: int = 64, device: torch.device | str = "cpu",
    on_samples: Callable[[float, np.ndarray, torch.Tensor], None] | None = None,
) -> list[dict[str, float]]:
    """One row {'alpha', 'fid', 'change'} per CFG scale: FID of ``num`` samples against the reference (mu, sigma)
    and the RMS change of the samples against the first alpha's (module docstring).
    ``on_samples(alpha, images, labels)``, if given, sees each alpha's samples (e.g. to save them)."""
    rows, first = [], None
    for alpha in tqdm(alphas, desc="CFG sweep", unit="alpha"):
        images, labels = sample_images(generator, num, alpha, vae=vae, seed=seed, device=device)
        if on_samples is not None:
            on_samples(alpha, images, labels)
        subset = images[:CHANGE_SUBSET].astype(np.float32) / 255.0
        first = subset if first is None else first
        features = inception_features(images, inception, batch_size=batch_size, device=device)
        rows.append({"alpha": alpha, "fid": frechet_distance(*statistics(features), *reference),
                     "change": float(np.sqrt(np.mean((subset - first) ** 2)))})
    return rows


def write_table(rows: list[dict[str, float]], out: str | Path, title: str = "") -> None:
    """cfg_sweep.csv, cfg_sweep.json and cfg_sweep.png (FID against alpha) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "cfg_sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "cfg_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    fig = Figure(figsize=(4, 3), layout="tight")
    ax = fig.subplots()
    ax.plot([r["alpha"] for r in rows], [r["fid"] for r in rows], "o-")
    ax.set(xlabel="CFG scale alpha", ylabel="FID", title=title)
    fig.savefig(out / "cfg_sweep.png", dpi=120)


def print_table(rows: list[dict[str, float]], real_fid: float | None = None) -> None:
    """The sweep as a text table; ``real_fid`` (held-out real images against the reference) as a first row."""
    print(f"{'alpha':>6}  {'FID':>9}  {'change':>7}   (change: RMS pixel change from the first alpha, same noise)")
    if real_fid is not None:
        print(f"{'real':>6}  {real_fid:9.3f}           (held-out real images)")
    for row in rows:
        print(f"{row['alpha']:6g}  {row['fid']:9.3f}  {row['change']:7.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image cfg-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--num", type=int, default=5000, help="samples per alpha")
    parser.add_argument("--reference", required=True,
                        help=".npz with mu/sigma, ADM .npz, folder of images, or 'mnist' (see drifting_image.fid)")
    parser.add_argument("--vae", default=None, help="AutoencoderKL folder that decodes a latent-space generator")
    parser.add_argument("--out", default=None, help="output folder (default: cfg_sweep next to the checkpoint)")
    parser.add_argument("--inception", default=None, help="TorchScript FID Inception file")
    parser.add_argument("--batch-size", type=int, default=64, help="Inception batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = load_generator(args.checkpoint, use_ema=not args.raw)
    vae = load_vae(args.vae, device) if args.vae else None
    inception = load_inception(args.inception, device)
    reference = reference_statistics(args.reference, inception, batch_size=args.batch_size, device=device)
    rows = fid_by_alpha(generator, args.alphas, args.num, reference, inception, vae=vae, seed=args.seed,
                        batch_size=args.batch_size, device=device)
    out = Path(args.out or Path(args.checkpoint).parent / "cfg_sweep")
    write_table(rows, out, title=f"{Path(args.checkpoint).parent.name}, {args.num} samples")
    print_table(rows)
    print(f"wrote {out / 'cfg_sweep.csv'}, cfg_sweep.json and cfg_sweep.png")


if __name__ == "__main__":
    main()
