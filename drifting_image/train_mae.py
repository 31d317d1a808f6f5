"""Pre-train the ResNet MAE feature encoder (paper A.3), optionally ending with the classification fine-tune.

Masked reconstruction with AdamW and EMA, on augmented images with ``augment`` and, for latent MAEs, their VAE
latents encoded at every step with ``vae`` (the released recipe); during the last ``finetune_steps`` steps the
loss becomes lambda * cross-entropy + (1 - lambda) * reconstruction, lambda ramping linearly from 0 to
``finetune_lambda`` over ``finetune_warmup`` steps. The checkpoint (out_dir/checkpoint.pt) is what
``drifting_image.train`` loads as ``mae_checkpoint``; the drifting loss uses its EMA weights. Single process;
resumes exactly from out_dir; logs to out_dir/logs.json.txt (``drifting_image.training``'s loop).

    python -m drifting_image.train_mae --config configs/image/mae_mnist_tiny.yaml
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from drifting import EMA, checkpoint
from drifting_image.data import SampleStream, load_dataset
from drifting_image.mae import MAE_SIZES, build_mae, classification_weight
from drifting_image.training import StepTrainer, learning_rate, load_config
from drifting_image.vae import encode, load_vae


@dataclass
class MAETrainConfig:
    data: str = "mnist"
    num_classes: int = 10
    out_dir: str = "outputs/image/mae"
    seed: int = 0
    device: str = "auto"  # cuda if available, else cpu
    mae: str = "tiny"
    mae_overrides: dict[str, Any] = field(default_factory=dict)
    # The released recipe: pixel images randomly resized-cropped and flipped (drifting_image.data), then, for the
    # latent MAEs, encoded by the VAE in this local folder at every step (data is then the pixel dataset).
    augment: bool = False
    vae: str | None = None

    steps: int = 2000
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 200
    grad_clip: float = 2.0
    ema_decay: float = 0.9995
    ema_power: float | None = None  # Diffusion Policy's EMA warm-up (e.g. 0.75) for short runs; None: constant
    finetune_steps: int = 0
    finetune_warmup: int = 1000
    finetune_lambda: float = 0.1

    log_every: int = 20
    save_every: int = 500
    wandb: str = "disabled"  # 'disabled', 'offline' or 'online'


class MAETrainer(StepTrainer):
    def __init__(self, cfg: MAETrainConfig):
        super().__init__(cfg)
        torch.manual_seed(cfg.seed)
        self.mae = build_mae(cfg.mae, num_classes=cfg.num_classes, **cfg.mae_overrides).to(self.device)
        self.mae_kwargs = {**vars(MAE_SIZES[cfg.mae]), "num_classes": cfg.num_classes, **cfg.mae_overrides}
        self.ema = EMA(self.mae, cfg.ema_decay, power=cfg.ema_power)
        self.optimizer = torch.optim.AdamW(self.mae.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.stream = SampleStream(load_dataset(cfg.data), seed=cfg.seed + 1, augment=cfg.augment)
        self.vae = load_vae(cfg.vae, self.device) if cfg.vae else None
        self.rng = torch.Generator().manual_seed(cfg.seed + 2)

    def path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save(self) -> None:
        checkpoint.atomic_save({
            "step": self.step, "config": asdict(self.cfg), "mae_kwargs": self.mae_kwargs,
            "mae": self.mae.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(), "rng": self.rng.get_state(),
            "global_rng": checkpoint.rng_state(),
        }, self.path())

    def resume(self) -> bool:
        if not self.path().is_file():
            return False
        state = checkpoint.load(self.path())
        self.mae.load_state_dict(state["mae"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.rng.set_state(state["rng"])
        checkpoint.set_rng_state(state["global_rng"])
        self.step = int(state["step"])
        return True

    def train_step(self) -> dict[str, torch.Tensor | float]:
        """One update; the metrics stay tensors until they are logged."""
        cfg = self.cfg
        images, labels = self.stream.next(cfg.batch_size)
        if self.vae is not None:
            images = encode(self.vae, images, self.rng)
        lr = learning_rate(cfg.lr, cfg.warmup_steps, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        lambda_cls = classification_weight(self.step, finetune_start=cfg.steps - cfg.finetune_steps,
                                           warmup=cfg.finetune_warmup, final=cfg.finetune_lambda)
        self.mae.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, metrics = self.mae(images.to(self.device), labels.to(self.device), lambda_cls=lambda_cls,
                                     generator=self.rng)
        loss = loss.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.mae.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.mae)
        self.step += 1
        return {"loss": loss.detach(), "grad_norm": grad_norm, "lr": lr, "lambda_cls": lambda_cls,
                **{k: v.detach().float().mean() for k, v in metrics.items()}}

    def progress(self, metrics: dict) -> dict:
        return {"recon": f"{metrics['recon_loss']:.4f}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image train-mae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with MAETrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    MAETrainer(load_config(args.config, args.overrides, MAETrainConfig)).run()


if __name__ == "__main__":
    main()
