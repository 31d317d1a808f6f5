"""The toy demos train: a short run must cover both modes and cut the energy distance (drifting/toy.py)."""

import torch

from drifting.toy import ABLATION_BASE, FIG3_CASES, FIG3_OPTIONS, ToyConfig, energy_distance, evaluate, main, train_toy


def test_energy_distance_separates_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    c = torch.randn(1000, 2, generator=g) + 1
    assert abs(energy_distance(a, b)) < 0.02 < energy_distance(a, c)


def test_collapsed_start_spreads_to_both_modes():
    start, spread = FIG3_CASES["collapsed_on_one_mode"]
    cfg = ToyConfig(target="bimodal", steps=300, n_gen=256, n_pos=256, start=start, start_spread=spread,
                    loss_options=FIG3_OPTIONS)
    model, _, snapshots = train_toy(cfg, snapshot_steps=(0,))
    before = energy_distance(snapshots[0], torch.randn(2000, 2) * 0.3 + torch.tensor([2.0, 0.0]))
    after = evaluate(model, "bimodal")
    assert after["energy_distance"] < 0.1
    assert min(after["mode_shares"]) > 0.3  # neither mode is lost
    assert before > 1.0


def test_cli_writes_png(tmp_path, monkeypatch):
    monkeypatch.setattr("drifting.toy.FIG3_CASES", {"between_modes": ((0.0, 0.0), 0.3)})
    main(["fig3", "--out", str(tmp_path), "--steps", "20"])
    assert (tmp_path / "fig3_between_modes.png").stat().st_size > 10_000


def test_ablation_variants_run(capsys):
    from dataclasses import replace

    from drifting.toy import ablation

    results = ablation(seeds=(0,), base=replace(ABLATION_BASE, steps=5, n_gen=32, n_pos=32))
    assert len(results) == 13 and "attraction only" in capsys.readouterr().out
