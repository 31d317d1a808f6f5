"""Image branch: the released training recipe. Our configs/image/*.yaml against the values of the authors'
configs/gen/*.yaml and configs/mae/*.yaml (copied below by hand from lambertae/drifting at accd0cf), the learning-rate
warm-up of their optax schedule, their data augmentation and the flipped copies of their latent cache."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from drifting_image.data import ArrayDataset, SampleStream, augment_images, random_resized_crop_box
from drifting_image.generator import GENERATOR_SIZES, DriftingDiT
from drifting_image.mae import MAE_SIZES, ResNetMAE
from drifting_image.train import TrainConfig
from drifting_image.train_mae import MAETrainConfig
from drifting_image.training import learning_rate, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "image"
GPUS = 8  # our per-rank classes_per_step times the 8 processes of the README's torchrun command

# Released generator configs: model, optimizer.lr_schedule / weight_decay / adam_b*, train.*, train.forward_dict.*,
# feature.*, dataset.use_aug. Architecture flags common to all (qk-norm, SwiGLU, RoPE, RMSNorm) are DriftingDiT's.
RELEASED_GENERATORS = {
    "latent_ablation": dict(
        input_size=32, in_channels=4, patch_size=2, hidden_size=768, depth=12, num_heads=12, n_cls_tokens=16,
        noise_classes=64, noise_coords=32, mlp_ratio=4.0, learning_rate=2e-4, warmup_steps=5000, weight_decay=0.01,
        adam_b1=0.9, adam_b2=0.95, total_steps=30000, train_batch_size=64, gen_per_label=64, pos_per_sample=64,
        neg_per_sample=16, positive_bank_size=128, negative_bank_size=1000, push_per_step=64, cfg_min=1.0,
        cfg_max=4.0, neg_cfg_pw=3.0, no_cfg_frac=0.0, R_list=[0.2, 0.05, 0.02], ema_decay=0.999, max_grad_norm=2.0,
        patch_mean_size=[2, 4], every_k_block=2, mae_path="hf://mae_latent_256", use_convnext=False, use_aug=False),
    "latent_sota_B": dict(
        input_size=32, in_channels=4, patch_size=2, hidden_size=768, depth=12, num_heads=12, n_cls_tokens=16,
        noise_classes=64, noise_coords=32, mlp_ratio=4.0, learning_rate=4e-4, warmup_steps=10000, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.95, total_steps=200000, train_batch_size=128, gen_per_label=64, pos_per_sample=64,
        neg_per_sample=32, positive_bank_size=128, negative_bank_size=1000, push_per_step=128, cfg_min=1.0,
        cfg_max=4.0, neg_cfg_pw=5.0, no_cfg_frac=0.0, R_list=[0.2, 0.05, 0.02], ema_decay=0.999, max_grad_norm=2.0,
        patch_mean_size=[2, 4], every_k_block=2, mae_path="hf://mae_latent_640", use_convnext=False, use_aug=False),
    "latent_sota_L": dict(
        input_size=32, in_channels=4, patch_size=2, hidden_size=1024, depth=24, num_heads=16, n_cls_tokens=16,
        noise_classes=64, noise_coords=32, mlp_ratio=4.0, learning_rate=4e-4, warmup_steps=10000, weight_decay=0.01,
        adam_b1=0.9, adam_b2=0.95, total_steps=200000, train_batch_size=128, gen_per_label=64, pos_per_sample=64,
        neg_per_sample=32, positive_bank_size=128, negative_bank_size=1000, push_per_step=64, cfg_min=1.0,
        cfg_max=4.0, neg_cfg_pw=3.0, no_cfg_frac=0.5, R_list=[0.2, 0.05, 0.02], ema_decay=0.999, max_grad_norm=2.0,
        patch_mean_size=[2, 4], every_k_block=2, mae_path="hf://mae_latent_640", use_convnext=False, use_aug=False),
    "pixel_sota_B": dict(
        input_size=256, in_channels=3, patch_size=16, hidden_size=768, depth=12, num_heads=12, n_cls_tokens=16,
        noise_classes=64, noise_coords=32, mlp_ratio=4.0, learning_rate=2e-4, warmup_steps=10000, weight_decay=0.01,
        adam_b1=0.9, adam_b2=0.95, total_steps=100000, train_batch_size=128, gen_per_label=64, pos_per_sample=128,
        neg_per_sample=32, positive_bank_size=128, negative_bank_size=1000, push_per_step=128, cfg_min=1.0,
        cfg_max=4.0, neg_cfg_pw=5.0, no_cfg_frac=0.0, R_list=[0.2, 0.05, 0.02], ema_decay=0.999, max_grad_norm=2.0,
        patch_mean_size=[2, 4], every_k_block=2, mae_path="hf://mae_pixel_640", use_convnext=True, use_aug=True),
    "pixel_sota_L": dict(
        input_size=256, in_channels=3, patch_size=16, hidden_size=1024, depth=24, num_heads=16, n_cls_tokens=16,
        noise_classes=64, noise_coords=32, mlp_ratio=4.0, learning_rate=4e-4, warmup_steps=10000, weight_decay=0.01,
        adam_b1=0.9, adam_b2=0.95, total_steps=100000, train_batch_size=128, gen_per_label=64, pos_per_sample=128,
        neg_per_sample=32, positive_bank_size=128, negative_bank_size=1000, push_per_step=128, cfg_min=1.0,
        cfg_max=4.0, neg_cfg_pw=5.0, no_cfg_frac=0.0, R_list=[0.2, 0.05, 0.02], ema_decay=0.999, max_grad_norm=2.0,
        patch_mean_size=[2, 4], every_k_block=2, mae_path="hf://mae_pixel_640", use_convnext=True, use_aug=True),
}
# max_grad_norm is train_gen's default (no released config sets it); no_cfg_frac absent from a config is 0.0.

RELEASED_MAES = {
    "latent_ablation_256": dict(
        base_channels=256, patch_size=2, layers=[3, 4, 6, 3], in_channels=4, input_patch_size=1, batch_size=8192,
        learning_rate=0.004, warmup_steps=4000, weight_decay=0.01, adam_b1=0.9, adam_b2=0.95, total_steps=30000,
        mask_ratio=0.5, ema_decay=0.9995, finetune_last_steps=0, warmup_finetune=1000, finetune_cls=0.1,
        use_aug=True, use_latent=True),
    "latent_640": dict(
        base_channels=640, patch_size=2, layers=[3, 4, 6, 3], in_channels=4, input_patch_size=1, batch_size=8192,
        learning_rate=0.004, warmup_steps=4000, weight_decay=0.01, adam_b1=0.9, adam_b2=0.95, total_steps=200000,
        mask_ratio=0.5, ema_decay=0.9995, finetune_last_steps=3000, warmup_finetune=1000, finetune_cls=0.1,
        use_aug=True, use_latent=True),
    "pixel_640": dict(
        base_channels=640, patch_size=2, layers=[3, 4, 6, 3], in_channels=3, input_patch_size=8, batch_size=8192,
        learning_rate=0.004, warmup_steps=4000, weight_decay=0.01, adam_b1=0.9, adam_b2=0.95, total_steps=200000,
        mask_ratio=0.5, ema_decay=0.9995, finetune_last_steps=3000, warmup_finetune=1000, finetune_cls=0.1,
        use_aug=True, use_latent=False),
}

OURS = {"latent_ablation": "latent_ablation", "latent_sota_B": "latent_B2", "latent_sota_L": "latent_L2",
        "pixel_sota_B": "pixel_B16", "pixel_sota_L": "pixel_L16", "latent_ablation_256": "mae_latent_256",
        "latent_640": "mae_latent_640", "pixel_640": "mae_pixel_640"}


def constructor_defaults(cls) -> dict:
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


def generator_in_release_terms(cfg: TrainConfig) -> dict:
    model = {**constructor_defaults(DriftingDiT), **vars(GENERATOR_SIZES[cfg.generator]), **cfg.generator_overrides}
    return dict(
        input_size=model["input_size"], in_channels=model["in_channels"], patch_size=model["patch_size"],
        hidden_size=model["hidden_size"], depth=model["depth"], num_heads=model["num_heads"],
        n_cls_tokens=model["num_registers"], noise_classes=model["style_vocab"], noise_coords=model["num_style"],
        mlp_ratio=model["mlp_ratio"], learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, adam_b1=cfg.betas[0], adam_b2=cfg.betas[1], total_steps=cfg.steps,
        train_batch_size=cfg.classes_per_step * GPUS, gen_per_label=cfg.gen_per_class,
        pos_per_sample=cfg.pos_per_class, neg_per_sample=cfg.unc_per_class, positive_bank_size=cfg.queue_per_class,
        negative_bank_size=cfg.queue_global, push_per_step=cfg.push_per_step, cfg_min=1.0, cfg_max=cfg.alpha_max,
        neg_cfg_pw=cfg.alpha_power, no_cfg_frac=cfg.p_alpha_one, R_list=sorted(cfg.temperatures, reverse=True),
        ema_decay=cfg.ema_decay, max_grad_norm=cfg.grad_clip, patch_mean_size=cfg.feature_patch_sizes,
        every_k_block=cfg.feature_every_k_block, mae_path=f"hf://{Path(cfg.mae_checkpoint).parent.name}",
        use_convnext=cfg.convnext is not None, use_aug=cfg.augment,
    )


def mae_in_release_terms(cfg: MAETrainConfig) -> dict:
    size = {**constructor_defaults(ResNetMAE), **vars(MAE_SIZES[cfg.mae]), **cfg.mae_overrides}
    return dict(
        base_channels=size["width"], patch_size=size["mask_patch"], layers=list(size["layers"]),
        in_channels=size["in_channels"], input_patch_size=size["input_patch"], batch_size=cfg.batch_size,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        adam_b1=cfg.betas[0], adam_b2=cfg.betas[1], total_steps=cfg.steps, mask_ratio=size["mask_ratio"],
        ema_decay=cfg.ema_decay, finetune_last_steps=cfg.finetune_steps, warmup_finetune=cfg.finetune_warmup,
        finetune_cls=cfg.finetune_lambda, use_aug=cfg.augment, use_latent=cfg.vae is not None,
    )


@pytest.mark.parametrize("released", sorted(RELEASED_GENERATORS))
def test_generator_configs_are_the_released_ones_value_by_value(released):
    cfg = load_config(str(CONFIGS / f"{OURS[released]}.yaml"), [], TrainConfig)
    assert generator_in_release_terms(cfg) == RELEASED_GENERATORS[released]
    # What the release does not configure: drift_loss's defaults, and every feature key.
    assert cfg.affinity_floor == 1e-6 and cfg.feature_max_locations is None and cfg.feature_warmup_steps == 0


@pytest.mark.parametrize("released", sorted(RELEASED_MAES))
def test_mae_configs_are_the_released_ones_value_by_value(released):
    ours = mae_in_release_terms(load_config(str(CONFIGS / f"{OURS[released]}.yaml"), [], MAETrainConfig))
    assert ours == RELEASED_MAES[released]


def test_warm_up_is_optax_linear_schedule_from_1e_6_then_constant():
    # optax.linear_schedule(1e-6, lr, warmup) joined to a constant, evaluated at the count of updates made so far.
    lr, warmup = 4e-4, 10000
    for step in (0, 1, 2500, 9999, 10000, 10001, 200000):
        expected = 1e-6 + (lr - 1e-6) * min(step, warmup) / warmup
        assert learning_rate(lr, warmup, step) == pytest.approx(expected, rel=1e-12)
    assert learning_rate(lr, 0, 0) == lr


def test_random_resized_crops_cover_a_fifth_to_all_of_the_image_with_bounded_aspect():
    generator = torch.Generator().manual_seed(0)
    boxes = [random_resized_crop_box(256, 256, generator) for _ in range(2000)]
    areas = np.array([h * w for _, _, h, w in boxes]) / 256**2
    aspects = np.array([w / h for _, _, h, w in boxes])
    assert all(top >= 0 and top + h <= 256 and left >= 0 and left + w <= 256 for top, left, h, w in boxes)
    # Uniform on [0.2, 1] before the tries that do not fit are redrawn, which favours the smaller areas.
    assert 0.19 <= areas.min() < 0.22 and areas.max() <= 1.0 and 0.45 < np.median(areas) < 0.6
    assert aspects.min() >= 0.74 and aspects.max() <= 1.34


def test_augmentation_crops_resizes_and_flips_half_the_images():
    generator = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-1, 1, 32).expand(3, 32, 32)  # brightness grows from left to right
    out = augment_images(ramp.expand(400, 3, 32, 32).clone(), generator)
    assert out.shape == (400, 3, 32, 32) and out.abs().max() <= 1
    rising = (out[:, 0, 16, -1] > out[:, 0, 16, 0]).float().mean().item()
    assert rising == pytest.approx(0.5, abs=0.08)  # mirrored in about half of the images
    assert (out[:, 0, 16, -1] - out[:, 0, 16, 0]).abs().min() < 1.9  # crops zoom in: a smaller range than 2


def test_stream_picks_the_flipped_copy_of_about_half_the_samples_and_resumes_exactly():
    images = np.arange(40 * 2 * 2 * 2, dtype=np.float32).reshape(40, 2, 2, 2)
    dataset = ArrayDataset(images, np.zeros(40, dtype=np.int64), flipped=-images)
    stream = SampleStream(dataset, seed=0)
    x, _ = stream.next(30)
    flipped_share = (x.flatten(1)[:, 0] < 0).float().mean().item()
    assert 0.2 < flipped_share < 0.8 and x.abs().flatten(1)[:, 1:].sum() > 0
    state = stream.state_dict()
    resumed = SampleStream(dataset, seed=5)
    resumed.load_state_dict(state)
    assert torch.equal(stream.next(50)[0], resumed.next(50)[0])
