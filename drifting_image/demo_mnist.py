"""The MNIST demo on a CPU, end to end: feature MAE -> generator -> samples -> FID and the CFG table.

    python -m drifting_image.demo_mnist  # outputs in outputs/image/mnist_demo

Stages; each one is skipped when its output exists, so a rerun after an interruption picks up where it stopped
(the two training stages also resume from their last checkpoint):

1. mae: pre-train the feature MAE (``configs/image/mae_mnist_tiny.yaml``) -> ``mae/checkpoint.pt``;
2. generator: train the generator with the MAE-feature drifting loss (``configs/image/mnist_tiny.yaml``)
   -> ``generator/checkpoint.pt``, with grids ``generator/samples_*.png`` along the way;
3. reference: FID Inception statistics of a class-balanced subset of the real digits
   -> ``fid/reference_stats.npz``, and the FID of as many other real digits as there are samples per alpha
   (the value a perfect generator would get at this sample size) -> ``fid/real_digits.json``;
4. sweep: for every CFG scale alpha, ``--num`` one-step samples (classes in equal turns) -> ``samples/alpha<a>.npz``
   and ``samples/alpha<a>.png`` (ten samples of each class, one column per class), and their FID
   -> ``cfg_sweep/cfg_sweep.{csv,json,png}``.

The FID here is computed on far fewer images than the usual 50k samples (the Inception network sees 299x299
inputs and is the slow part on a CPU), so it is biased upwards: read it against the real-digit row, which has the
same bias. The wall and CPU time of each stage, the FID per alpha and the generator's last logged loss are printed at
the end. ``--mae-overrides`` / ``--overrides`` take key=value pairs for the two training configs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import time
from pathlib import Path

import numpy as np
import torch

from drifting import checkpoint
from drifting.json_log import read_json_log
from drifting_image.cfg_sweep import fid_by_alpha, print_table, write_table
from drifting_image.data import load_mnist_5k
from drifting_image.fid import frechet_distance, inception_features, load_inception, statistics
from drifting_image.sample import load_generator, save_grid
from drifting_image.train import TrainConfig, Trainer
from drifting_image.train_mae import MAETrainConfig, MAETrainer
from drifting_image.training import load_config

# configs/image of the checkout, installed as this package (pyproject's package-dir).
CONFIGS = Path(importlib.resources.files("drifting_image.configs"))


def is_trained(path: Path, steps: int) -> bool:
    """Whether a training checkpoint exists and has reached ``steps``."""
    return path.is_file() and int(checkpoint.load(path)["step"]) >= steps


def split_real_digits(labels: np.ndarray, reference_per_class: int, heldout_per_class: int,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint class-balanced index sets: the FID reference and the held-out real digits."""
    rng = np.random.default_rng(seed)
    reference, heldout = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        if len(index) < reference_per_class + heldout_per_class:
            raise ValueError(f"class {label} has {len(index)} digits; the reference and the held-out set need "
                             f"{reference_per_class} + {heldout_per_class}")
        reference.append(index[:reference_per_class])
        heldout.append(index[reference_per_class:reference_per_class + heldout_per_class])
    return np.concatenate(reference), np.concatenate(heldout)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.mae_cfg = load_config(args.mae_config, [f"out_dir={self.out / 'mae'}", *args.mae_overrides],
                                   MAETrainConfig)
        self.cfg = load_config(args.config, [f"out_dir={self.out / 'generator'}",
                                             f"mae_checkpoint={self.out / 'mae' / 'checkpoint.pt'}", *args.overrides],
                               TrainConfig)
        if self.cfg.data != "mnist" or self.mae_cfg.data != "mnist":
            raise ValueError("the demo's FID reference is the MNIST digits: both configs need data: mnist; "
                             "for other data use drifting_image.train, sample, fid and cfg_sweep")
        self.reference_path = self.out / "fid" / "reference_stats.npz"
        self.real_path = self.out / "fid" / "real_digits.json"
        self.sweep_dir = self.out / "cfg_sweep"
        # Per stage (wall seconds, CPU seconds of this process); None when it was skipped. On a shared machine
        # the CPU time is what the stage costs; the wall time also counts the waits for a core.
        self.times: dict[str, tuple[float, float] | None] = {}
        self._inception = None

    def inception(self):
        if self._inception is None:
            self._inception = load_inception(self.args.inception, self.device)
        return self._inception

    def features(self, images: np.ndarray) -> np.ndarray:
        return inception_features(images, self.inception(), batch_size=self.args.batch_size, device=self.device)

    def stage(self, name: str, done: bool, run) -> None:
        if done:
            print(f"[{name}] output exists, skipped")
            self.times[name] = None
            return
        print(f"[{name}] running")
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        self.times[name] = time.perf_counter() - wall, time.process_time() - cpu
        print(f"[{name}] done in {self.times[name][0]:.0f} s")

    # -- stages -------------------------------------------------------------------------------------------
    def reference(self) -> None:
        """Reference statistics and the FID of held-out real digits (same count as the samples per alpha)."""
        mnist = load_mnist_5k()
        classes = self.cfg.num_classes
        reference, heldout = split_real_digits(mnist.labels, self.args.reference_num // classes,
                                               -(-self.args.num // classes), seed=self.cfg.seed)
        digits = mnist.as_uint8()
        mu, sigma = statistics(self.features(digits[reference]))
        real_fid = frechet_distance(*statistics(self.features(digits[heldout[:self.args.num]])), mu, sigma)
        self.reference_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.reference_path, mu=mu, sigma=sigma)
        self.real_path.write_text(json.dumps({"num": self.args.num, "reference_num": len(reference),
                                              "fid": real_fid}) + "\n")

    def sweep(self) -> None:
        """Samples, a grid and the FID for every alpha (``cfg_sweep.fid_by_alpha``); the table as in ``cfg_sweep``."""
        generator = load_generator(self.out / "generator" / "checkpoint.pt")
        with np.load(self.reference_path) as data:
            reference = data["mu"], data["sigma"]
        samples_dir = self.out / "samples"
        samples_dir.mkdir(parents=True, exist_ok=True)

        def save(alpha: float, images: np.ndarray, labels: torch.Tensor) -> None:
            np.savez(samples_dir / f"alpha{alpha:g}.npz", arr_0=images, arr_1=labels.numpy())
            # Labels go 0, 1, ..., 9, 0, 1, ...: ten images per row put each class in its own column.
            save_grid(images[:10 * generator.num_classes], samples_dir / f"alpha{alpha:g}.png",
                      ncol=generator.num_classes)

        rows = fid_by_alpha(generator, self.args.alphas, self.args.num, reference, self.inception(),
                            seed=self.cfg.seed, batch_size=self.args.batch_size, device=self.device, on_samples=save)
        write_table(rows, self.sweep_dir, title=f"MNIST demo, {self.args.num} samples per alpha")

    def run(self) -> None:
        mae_path, generator_path = self.out / "mae" / "checkpoint.pt", self.out / "generator" / "checkpoint.pt"
        self.stage("mae", is_trained(mae_path, self.mae_cfg.steps), lambda: MAETrainer(self.mae_cfg).run())
        self.stage("generator", is_trained(generator_path, self.cfg.steps), lambda: Trainer(self.cfg).run())
        self.stage("reference", self.reference_path.is_file() and self.real_path.is_file(), self.reference)
        self.stage("sweep", (self.sweep_dir / "cfg_sweep.json").is_file(), self.sweep)
        self.report()

    def report(self) -> None:
        print(f"\n{'stage':<10} {'wall s':>8} {'CPU s':>8}")
        for name, spent in self.times.items():
            print(f"{name:<10} " + ("skipped" if spent is None else f"{spent[0]:8.0f} {spent[1]:8.0f}"))
        ran = [spent for spent in self.times.values() if spent is not None]
        print(f"{'total':<10} {sum(w for w, _ in ran):8.0f} {sum(c for _, c in ran):8.0f}")
        real = json.loads(self.real_path.read_text())
        print(f"\nFID against {real['reference_num']} real digits, {real['num']} images each")
        print_table(json.loads((self.sweep_dir / "cfg_sweep.json").read_text()), real_fid=real["fid"])
        last = read_json_log(self.out / "generator" / "logs.json.txt")[-1]
        print(f"\ngenerator loss at step {last['global_step'] + 1}: {last['loss']:.4f}")
        print(f"sample grids (one column per class): {self.out / 'samples'}/alpha<a>.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image demo-mnist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/image/mnist_demo", help="output folder")
    parser.add_argument("--mae-config", default=str(CONFIGS / "mae_mnist_tiny.yaml"))
    parser.add_argument("--config", default=str(CONFIGS / "mnist_tiny.yaml"), help="generator TrainConfig YAML")
    parser.add_argument("--mae-overrides", nargs="*", default=[], help="key=value overrides of the MAE config")
    parser.add_argument("--overrides", nargs="*", default=[], help="key=value overrides of the generator config")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0], help="CFG scales")
    parser.add_argument("--num", type=int, default=200, help="samples per alpha (and held-out real digits)")
    parser.add_argument("--reference-num", type=int, default=500, help="real digits in the FID reference")
    parser.add_argument("--inception", default=None, help="TorchScript FID Inception file (default: the wheel's)")
    parser.add_argument("--batch-size", type=int, default=50, help="Inception batch size")
    args = parser.parse_args(argv)
    Demo(args).run()


if __name__ == "__main__":
    main()
