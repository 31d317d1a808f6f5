"""Train a class-conditional one-step image generator with the drifting loss (paper A.9).

Each step, on each rank:
1. draw N_c class labels and a CFG scale alpha per label (density proportional to alpha^-k on [1, 4]);
2. generate G samples per label from noise, the label and alpha;
3. draw P positives of each label from the per-class queue and U unconditional negatives from the global queue,
   the latter weighted by w(alpha) = (alpha - 1)(G - 1) / U;
4. extract multi-scale features of all three with the frozen MAE, and for the pixel models ConvNeXt-V2 (gradients
   flow through them to the generator);
5. the drifting loss per (label, feature) group, summed over features; AdamW, gradient clipping, EMA.
Real samples are pushed into the queues from a shuffled stream over the dataset (paper A.8).

Under torchrun each rank draws its own labels, so every class group lives on one rank and the drifting loss
needs no communication; DDP averages the gradients. Checkpoints are written atomically and hold everything for
an exact resume (models, EMA, optimizer, queue, data stream, random states, step). The loop, the log
(``out_dir/logs.json.txt``) and the device set-up are ``drifting_image.training``'s.

    python -m drifting_image.train --config configs/image/mnist_tiny.yaml steps=200 out_dir=outputs/image/mnist
    torchrun --nproc_per_node 8 -m drifting_image.train --config configs/image/latent_ablation.yaml
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from drifting import EMA, SampleQueue, checkpoint, feature_drift_loss, sample_cfg_alpha, unconditional_weight
from drifting_image.convnext import ConvNeXtFeatures
from drifting_image.data import SampleStream, load_dataset
from drifting_image.features import image_features
from drifting_image.generator import DriftingDiT, build_generator
from drifting_image.mae import ResNetMAE
from drifting_image.sample import save_grid, to_uint8
from drifting_image.training import StepTrainer, learning_rate, load_config


@dataclass
class TrainConfig:
    data: str = "mnist"  # 'mnist' or an .npz file (see drifting_image.data)
    augment: bool = False  # random resized crop and flip of real pixel images, as the released pixel models
    num_classes: int = 10
    out_dir: str = "outputs/image/run"
    seed: int = 0
    device: str = "auto"  # cuda if available, else cpu; under torchrun each rank takes cuda:LOCAL_RANK

    # Models. mae_checkpoint=None uses only the 'global' feature (the vanilla loss without phi).
    generator: str = "T/4"
    generator_overrides: dict[str, Any] = field(default_factory=dict)
    mae_checkpoint: str | None = None
    # Local folder of facebook/convnextv2-base-22k-224: its features join the MAE's, as in the released pixel models.
    convnext: str | None = None
    feature_patch_sizes: list[int] = field(default_factory=lambda: [2, 4])
    feature_every_k_block: int = 2
    feature_max_locations: int | None = None  # drop feature keys with more locations (CPU budgets); None: all
    # Steps of the vanilla loss alone before the encoder's features join: the zero-initialized generator starts at
    # an all-zero image, where the encoder's first GroupNorm sees no variance and its huge Jacobian turns the
    # feature drift into stripe patterns (seen on MNIST); a short warm-up moves the samples off that point.
    feature_warmup_steps: int = 0

    # Drifting loss (per rank): N_c labels, G generated, P positives, U unconditional negatives per label.
    classes_per_step: int = 10
    gen_per_class: int = 16
    pos_per_class: int = 16
    unc_per_class: int = 8  # 0 trains without CFG
    alpha_power: float = 3.0
    alpha_max: float = 4.0
    p_alpha_one: float = 0.0
    temperatures: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.2])
    affinity_floor: float = 1e-6

    # Sample queue (paper A.8).
    queue_per_class: int = 128
    queue_global: int = 1000
    push_per_step: int = 64

    # Optimization.
    steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    grad_clip: float = 2.0
    ema_decay: float = 0.999
    ema_power: float | None = None  # Diffusion Policy's EMA warm-up (e.g. 0.75) for short runs; None: constant

    # Bookkeeping.
    log_every: int = 10
    save_every: int = 500
    sample_alphas: list[float] = field(default_factory=lambda: [1.0, 2.0])
    wandb: str = "disabled"  # 'disabled', 'offline' or 'online'


def load_encoder(path: str, device: torch.device) -> ResNetMAE:
    """The EMA weights of an MAE checkpoint written by ``drifting_image.train_mae``, frozen."""
    state = checkpoint.load(path)
    if "ema" not in state or "mae_kwargs" not in state:
        raise KeyError(f"{path}: not an MAE checkpoint (expected keys 'ema' and 'mae_kwargs')")
    mae = ResNetMAE(**state["mae_kwargs"])
    mae.load_state_dict(state["ema"]["model"])
    return mae.to(device).eval().requires_grad_(False)


def grouped(features: dict[str, torch.Tensor], groups: int) -> dict[str, torch.Tensor]:
    """[groups * N, L, C] per key -> [groups, N, L, C], the layout of ``feature_drift_loss``."""
    return {k: v.view(groups, -1, *v.shape[1:]) for k, v in features.items()}


def generator_step_loss(
    cfg: TrainConfig,
    model: torch.nn.Module,
    encoder: ResNetMAE | None,
    queue: SampleQueue,
    rng: torch.Generator,
    device: torch.device,
    convnext: ConvNeXtFeatures | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One step's loss (a scalar), the loss's info dict and the generated samples (detached).

    ``model`` is the generator, possibly DDP-wrapped; ``convnext`` adds the ConvNeXt-V2 keys to the features.
    All randomness comes from the CPU generator ``rng``, so a run is reproducible and resumable regardless of the
    device.
    """
    generator: DriftingDiT = model.module if isinstance(model, DistributedDataParallel) else model
    Nc, G, P, U = cfg.classes_per_step, cfg.gen_per_class, cfg.pos_per_class, cfg.unc_per_class
    if Nc <= cfg.num_classes:
        labels = torch.randperm(cfg.num_classes, generator=rng)[:Nc]
    else:
        labels = torch.randint(cfg.num_classes, (Nc,), generator=rng)
    if U > 0:
        alpha = sample_cfg_alpha(Nc, k=cfg.alpha_power, alpha_max=cfg.alpha_max, p_alpha_one=cfg.p_alpha_one,
                                 generator=rng)
    else:
        alpha = torch.ones(Nc)
    positives = queue.sample_class(labels, P, generator=rng)
    reals = positives if U == 0 else torch.cat([positives, queue.sample_global(Nc, U, generator=rng)], dim=1)
    noise = torch.randn(Nc * G, *generator.sample_shape, generator=rng)
    style = generator.draw_style(Nc * G, rng=rng)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    feature_options = {"patch_sizes": tuple(cfg.feature_patch_sizes), "every_k_block": cfg.feature_every_k_block,
                       "max_locations": cfg.feature_max_locations}

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = image_features(x, encoder, **feature_options)
        return out if convnext is None else {**out, **convnext(x)}

    with autocast:
        with torch.no_grad():
            real = grouped(features(reals.flatten(0, 1).to(device)), Nc)
        samples = model(noise.to(device), labels.repeat_interleave(G).to(device),
                        alpha.repeat_interleave(G).to(device), style.to(device))
        generated = grouped(features(samples), Nc)

    pos = {k: v[:, :P] for k, v in real.items()}
    neg, weight_neg = None, None
    if U > 0:
        neg = {k: v[:, P:] for k, v in real.items()}
        weight_neg = unconditional_weight(alpha, G, U).to(device)[:, None].expand(Nc, U)
    loss, info = feature_drift_loss(generated, pos, neg, weight_neg=weight_neg,
                                    temperatures=tuple(cfg.temperatures), affinity_floor=cfg.affinity_floor)
    info["alpha"] = alpha.mean()
    return loss.mean(), info, samples.detach()


class Trainer(StepTrainer):
    """Holds the run's state; ``run()`` trains to cfg.steps, resuming from out_dir if a checkpoint is there."""

    def __init__(self, cfg: TrainConfig):
        if cfg.pos_per_class > cfg.queue_per_class or cfg.unc_per_class > cfg.queue_global:
            raise ValueError(f"the queues hold {cfg.queue_per_class} per class and {cfg.queue_global} in all; "
                             f"pos_per_class={cfg.pos_per_class} and unc_per_class={cfg.unc_per_class} must fit")
        super().__init__(cfg)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.generator = build_generator(cfg.generator, num_classes=cfg.num_classes,
                                         **cfg.generator_overrides).to(self.device)
        self.ema = EMA(self.generator, cfg.ema_decay, power=cfg.ema_power)
        self.model = self.generator
        if self.dist.world_size > 1:
            self.model = DistributedDataParallel(self.generator, device_ids=[self.device.index] if
                                                 self.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(self.generator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.encoder = load_encoder(cfg.mae_checkpoint, self.device) if cfg.mae_checkpoint else None
        self.convnext = ConvNeXtFeatures.from_folder(cfg.convnext).to(self.device) if cfg.convnext else None

        dataset = load_dataset(cfg.data)
        if dataset.sample_shape != self.generator.sample_shape:
            raise ValueError(f"dataset {cfg.data!r} has samples {dataset.sample_shape} but generator "
                             f"{cfg.generator} makes {self.generator.sample_shape}")
        if dataset.labels.min() < 0 or dataset.labels.max() >= cfg.num_classes:
            raise ValueError(f"dataset {cfg.data!r} has labels outside [0, num_classes={cfg.num_classes})")
        self.stream = SampleStream(dataset, seed=cfg.seed + 1 + self.dist.rank, augment=cfg.augment)
        self.queue = SampleQueue(cfg.num_classes, dataset.sample_shape, cfg.queue_per_class, cfg.queue_global)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1000 * (self.dist.rank + 1))
        self.sample_noise = torch.randn(cfg.num_classes, *self.generator.sample_shape,
                                        generator=torch.Generator().manual_seed(cfg.seed))

    # -- checkpoints --------------------------------------------------------------------------------------
    def shared_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def rank_path(self, rank: int) -> Path:
        return self.out_dir / f"rank_state_{rank}.pt"

    def save(self) -> None:
        if self.dist.is_main:
            checkpoint.atomic_save({
                "step": self.step, "config": asdict(self.cfg), "generator": self.generator.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            }, self.shared_path())
        checkpoint.atomic_save({
            "step": self.step, "queue": self.queue.state_dict(), "stream": self.stream.state_dict(),
            "rng": self.rng.get_state(), "global_rng": checkpoint.rng_state(),
        }, self.rank_path(self.dist.rank))
        self.dist.barrier()

    def resume(self) -> bool:
        if not self.shared_path().is_file():
            return False
        shared, local = checkpoint.load(self.shared_path()), checkpoint.load(self.rank_path(self.dist.rank))
        if shared["step"] != local["step"]:
            raise RuntimeError(f"{self.shared_path()} is at step {shared['step']} but {self.rank_path(self.dist.rank)} "
                               f"at step {local['step']}: the run stopped while saving")
        self.generator.load_state_dict(shared["generator"])
        self.ema.load_state_dict(shared["ema"])
        self.optimizer.load_state_dict(shared["optimizer"])
        self.queue.load_state_dict(local["queue"])
        self.stream.load_state_dict(local["stream"])
        self.rng.set_state(local["rng"])
        checkpoint.set_rng_state(local["global_rng"])
        self.step = int(shared["step"])
        return True

    # -- training -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.fill_queue()

    def fill_queue(self) -> None:
        """Push real samples until every class holds P and the global ring holds U (at the start of a run)."""
        cfg = self.cfg
        need = min(cfg.pos_per_class, cfg.queue_per_class)
        for _ in range(10_000):
            counts = [self.queue.count(c) for c in range(cfg.num_classes)]
            if min(counts) >= need and min(self.queue.global_count, cfg.queue_global) >= cfg.unc_per_class:
                return
            self.queue.push(*self.stream.next(cfg.push_per_step))
        raise RuntimeError(f"could not queue {need} samples of every class; is each of the {cfg.num_classes} "
                           f"classes present in {cfg.data!r}?")

    def train_step(self) -> dict[str, torch.Tensor | float]:
        """One update; the metrics stay tensors until they are logged."""
        cfg = self.cfg
        self.queue.push(*self.stream.next(cfg.push_per_step))
        lr = learning_rate(cfg.lr, cfg.warmup_steps, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with_features = self.step >= cfg.feature_warmup_steps
        loss, info, samples = generator_step_loss(cfg, self.model, self.encoder if with_features else None, self.queue,
                                            self.rng, self.device, self.convnext if with_features else None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.generator)
        self.step += 1
        return {"loss": loss.detach(), "grad_norm": grad_norm, "lr": lr,
                "sample_rms": samples.float().square().mean().sqrt(), **info}

    def progress(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['loss']:.4f}", "gnorm": f"{metrics['grad_norm']:.3f}"}

    @torch.no_grad()
    def save_samples(self) -> None:
        """A grid from the EMA generator: one row per CFG scale in cfg.sample_alphas, one column per class."""
        ema = self.ema.model
        labels = torch.arange(self.cfg.num_classes, device=self.device)
        style = ema.draw_style(len(labels), rng=torch.Generator().manual_seed(self.cfg.seed)).to(self.device)
        rows = [ema(self.sample_noise.to(self.device), labels, alpha, style) for alpha in self.cfg.sample_alphas]
        save_grid(to_uint8(torch.cat(rows).cpu()), self.out_dir / f"samples_{self.step:07d}.png", ncol=len(labels))

    def after_save(self) -> None:
        self.save_samples()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 out_dir=outputs/image/x")
    args = parser.parse_args(argv)
    Trainer(load_config(args.config, args.overrides, TrainConfig)).run()


if __name__ == "__main__":
    main()
