"""Toy 2-D demos of the paper (Fig. 3 and Fig. 4) and their ablations at toy scale.

    drifting-toy fig3        # bimodal target, three initializations of q
    drifting-toy fig4        # checkerboard and swiss roll
    drifting-toy ablation    # Table 1 / Table 11 / temperature table at toy scale, 3 seeds
    drifting-toy all         # fig3 + fig4

Each case trains a small MLP generator with ``drift_loss`` and writes a PNG of sample snapshots plus the
loss curve, and prints the energy distance to fresh target samples (and the share of samples per mode).
Fig. 4 uses the raw-space field of the authors' toy notebook (one temperature 0.05, no feature or drift
normalization). Fig. 3 uses the core's default field (feature and drift normalization, temperatures
0.02/0.05/0.2): with a single sharp raw temperature a q collapsed on one mode never sees the other mode.
Both run without the affinity floor, which would pull samples that start far from the data (or collapsed
on one mode) toward the centroid of the data: measured by ``drifting-toy fig3 --floor``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from drifting.field import drift_loss

# ----------------------------------------------------------------------------- targets

MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
RING = torch.stack([2.0 * torch.cos(torch.arange(8) * math.pi / 4), 2.0 * torch.sin(torch.arange(8) * math.pi / 4)], 1)


def sample_bimodal(n: int, g: torch.Generator) -> torch.Tensor:
    return MODES[torch.randint(0, 2, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g)


def sample_ring(n: int, g: torch.Generator) -> torch.Tensor:
    return RING[torch.randint(0, 8, (n,), generator=g)] + 0.15 * torch.randn(n, 2, generator=g)


def sample_checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """8 of the 16 cells of a 4x4 grid on [-1, 1]^2 (alternating colours), with a little noise."""
    cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float32)
    corner = cells[torch.randint(0, 8, (n,), generator=g)]
    points = (corner + torch.rand(n, 2, generator=g)) / 2.0 - 1.0
    return points + 0.01 * torch.randn(n, 2, generator=g)


def sample_swiss_roll(n: int, g: torch.Generator) -> torch.Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    points = points / points.abs().max()  # max-abs 1, as the notebook; nearly scale-free in n
    return points + 0.02 * torch.randn(n, 2, generator=g)


TARGETS = {"bimodal": sample_bimodal, "ring": sample_ring, "checkerboard": sample_checkerboard,
           "swiss_roll": sample_swiss_roll}

# ----------------------------------------------------------------------------- generator


class ToyGenerator(nn.Module):
    """MLP noise -> 256 -> 256 -> 256 -> 2 (SiLU), output = start + MLP(noise).

    The last layer starts small so that q starts as a tight blob at ``start`` (how Fig. 3 places it).
    """

    def __init__(self, noise_dim: int = 8, width: int = 256, start=(0.0, 0.0), start_spread: float = 1.0):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = nn.Sequential(
            nn.Linear(noise_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2),
        )
        with torch.no_grad():
            self.net[-1].weight.mul_(start_spread)
            self.net[-1].bias.zero_()
        self.register_buffer("start", torch.tensor(start, dtype=torch.float32))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.start + self.net(noise)


# ----------------------------------------------------------------------------- metrics


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (zero iff the distributions match)."""
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def spread_ratio(x: torch.Tensor, modes: torch.Tensor, data_std: float, radius: float) -> float:
    """RMS distance of on-mode samples to their mode over the data's (1 = right width; < 1 contracted)."""
    d = torch.cdist(x, modes).min(1).values
    close = d < radius
    return (d[close].square().mean().sqrt() / (data_std * 2**0.5)).item() if close.any() else float("nan")


def mode_shares(x: torch.Tensor, modes: torch.Tensor, radius: float) -> list[float]:
    """Share of samples within ``radius`` of each mode."""
    d = torch.cdist(x, modes)
    nearest = d.argmin(1)
    close = d.min(1).values < radius
    return [((nearest == i) & close).float().mean().item() for i in range(len(modes))]


# ----------------------------------------------------------------------------- training


@dataclass
class ToyConfig:
    target: str = "checkerboard"
    steps: int = 2000
    n_gen: int = 512  # generated samples per step (the notebook uses 2048; 512 keeps a case under 2 minutes here)
    n_pos: int = 512  # data samples per step
    lr: float = 1e-3
    start: tuple = (0.0, 0.0)
    start_spread: float = 1.0
    seed: int = 0
    loss_options: dict = field(default_factory=lambda: dict(
        temperatures=(0.05,), normalize_features=False, normalize_drift=False, affinity_floor=0.0))


def train_toy(cfg: ToyConfig, snapshot_steps=(), progress: bool = False):
    """Train a toy generator; returns (generator, per-step |V|^2, {step: samples}).

    |V|^2 is the mean squared drift before drift normalization, summed over temperatures; for the raw field
    with one temperature it equals the loss. (With drift normalization the loss itself stays O(1) by design.)
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    sample_target = TARGETS[cfg.target]
    model = ToyGenerator(start=cfg.start, start_spread=cfg.start_spread)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    fixed_noise = torch.randn(2000, model.noise_dim, generator=g)
    losses, snapshots = [], {}
    for step in tqdm(range(cfg.steps + 1), desc=cfg.target, disable=not progress, leave=False):
        if step in snapshot_steps:
            with torch.no_grad():
                snapshots[step] = model(fixed_noise)
        if step == cfg.steps:
            break
        gen = model(torch.randn(cfg.n_gen, model.noise_dim, generator=g))
        pos = sample_target(cfg.n_pos, g)
        loss, info = drift_loss(gen[None], pos[None], **cfg.loss_options)
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        losses.append(sum(v.item() for k, v in info.items() if k.startswith("drift_sq_norm")))
    return model, np.array(losses), snapshots


def evaluate(model: ToyGenerator, target: str, seed: int = 1234, n: int = 2000) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = model(torch.randn(n, model.noise_dim, generator=g))
    metrics = {"energy_distance": energy_distance(x, TARGETS[target](n, g))}
    if target == "bimodal":
        metrics["mode_shares"] = mode_shares(x, MODES, radius=1.0)
    if target == "ring":
        metrics["mode_shares"] = mode_shares(x, RING, radius=0.5)
        metrics["spread_ratio"] = spread_ratio(x, RING, data_std=0.15, radius=0.5)
    return metrics


# ----------------------------------------------------------------------------- figures


def plot_run(path: Path, title: str, target_samples: torch.Tensor, snapshots: dict, losses: np.ndarray, lim: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(snapshots)
    fig, axes = plt.subplots(1, len(steps) + 1, figsize=(3 * (len(steps) + 1), 3.2))
    for ax, step in zip(axes, steps, strict=False):  # the last axis shows the loss
        ax.scatter(*target_samples.T, s=1, c="tab:blue", alpha=0.3, label="data p")
        ax.scatter(*snapshots[step].T, s=1, c="tab:orange", alpha=0.5, label="generated q")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=f"step {step}", xticks=[], yticks=[])
    axes[-1].semilogy(losses, lw=0.8)
    axes[-1].set(title="|V|^2 (before drift normalization)", xlabel="step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIG3_CASES = {  # (start of q, spread of q at step 0)
    "between_modes": ((0.0, 0.0), 0.3),
    "far_from_both": ((0.0, 6.0), 0.3),
    "collapsed_on_one_mode": ((-2.0, 0.0), 0.3),
}


def run_case(name: str, cfg: ToyConfig, out: Path, lim: float) -> dict:
    t0 = time.time()
    snapshot_steps = sorted({0, cfg.steps // 10, cfg.steps // 4, cfg.steps // 2, cfg.steps})
    model, losses, snapshots = train_toy(cfg, snapshot_steps, progress=True)
    metrics = evaluate(model, cfg.target)
    target_samples = TARGETS[cfg.target](2000, torch.Generator().manual_seed(99))
    path = out / f"{name}.png"
    plot_run(path, f"{name}: energy distance {metrics['energy_distance']:.4f}", target_samples, snapshots, losses, lim)
    shares = ("" if "mode_shares" not in metrics
              else "  mode shares " + " / ".join(f"{s:.2f}" for s in metrics["mode_shares"]))
    print(f"{name:28s} energy distance {metrics['energy_distance']:.4f}{shares}  "
          f"|V|^2 {losses[0]:.2e} -> {losses[-1]:.2e}  ({time.time() - t0:.0f} s)  {path}")
    return metrics


FIG3_OPTIONS = dict(affinity_floor=0.0)  # the core's defaults otherwise


def fig3(out: Path, steps: int, affinity_floor: float = 0.0) -> dict:
    results = {}
    for name, (start, spread) in FIG3_CASES.items():
        cfg = ToyConfig(target="bimodal", steps=steps, n_gen=256, n_pos=256, start=start, start_spread=spread,
                        loss_options={**FIG3_OPTIONS, "affinity_floor": affinity_floor})
        suffix = "" if affinity_floor == 0 else "_with_floor"
        results[name] = run_case(f"fig3_{name}{suffix}", cfg, out, lim=7.0)
    return results


def fig4(out: Path, steps: int) -> dict:
    return {t: run_case(f"fig4_{t}", ToyConfig(target=t, steps=steps), out, lim=1.3)
            for t in ("checkerboard", "swiss_roll")}


# ----------------------------------------------------------------------------- ablation

ABLATION_BASE = ToyConfig(target="ring", steps=2000, n_gen=128, n_pos=128, start_spread=0.3,
                          loss_options=dict(affinity_floor=0.0))
ABLATIONS = {
    "Table 1 (drifting field)": {
        "anti-symmetric V+ - V-": {},
        "1.5x attraction": {"attraction": 1.5},
        "1.5x repulsion": {"repulsion": 1.5},
        "2.0x attraction": {"attraction": 2.0},
        "2.0x repulsion": {"repulsion": 2.0},
        "attraction only": {"repulsion": 0.0},
    },
    "Table 11 (kernel normalization)": {
        "softmax over x and y": {"kernel_norm": "both"},
        "softmax over y": {"kernel_norm": "row"},
        "no normalization": {"kernel_norm": "none"},
    },
    "A.6 (temperatures)": {
        "tau 0.02": {"temperatures": (0.02,)},
        "tau 0.05": {"temperatures": (0.05,)},
        "tau 0.2": {"temperatures": (0.2,)},
        "tau {0.02, 0.05, 0.2}": {"temperatures": (0.02, 0.05, 0.2)},
    },
}


def ablation(seeds=(0, 1, 2), base: ToyConfig = ABLATION_BASE) -> dict:
    """Energy distance (mean +- std over seeds) for each variant; prints the tables."""
    print(f"Toy ablation: 8-Gaussian ring, MLP generator started at the centre, {base.steps} steps, "
          f"{base.n_gen} generated vs {base.n_pos} data per step, core defaults with the affinity floor off, "
          f"{len(seeds)} seeds. Metrics: energy distance to fresh data (lower is better), share of samples within "
          f"0.5 of a ring mode, and their spread around the mode relative to the data's (1 is right).")
    cache, results = {}, {}
    for table, variants in ABLATIONS.items():
        print(f"\n{table}\n{'variant':28s} {'energy distance':>18s}   on-ring   spread")
        for name, options in variants.items():
            key = tuple(sorted(options.items()))
            if key not in cache:
                runs = []
                for seed in seeds:
                    cfg = replace(base, seed=seed, loss_options={**base.loss_options, **options})
                    model, _, _ = train_toy(cfg)
                    runs.append(evaluate(model, base.target, seed=1000 + seed))
                cache[key] = runs
            runs = cache[key]
            ed = np.array([r["energy_distance"] for r in runs])
            on_ring = np.mean([sum(r["mode_shares"]) for r in runs])
            # A run with no sample on the ring has no spread (NaN); average the runs that have one.
            spreads = [r["spread_ratio"] for r in runs if not np.isnan(r["spread_ratio"])]
            spread = np.mean(spreads) if spreads else float("nan")
            results[(table, name)] = (ed.mean(), ed.std(), on_ring, spread)
            print(f"{name:28s} {ed.mean():10.4f} +- {ed.std():.4f}   {on_ring:7.2f}   {spread:6.2f}")
    return results


# ----------------------------------------------------------------------------- CLI


def main(argv=None):
    parser = argparse.ArgumentParser(prog="drifting-toy", description="Toy 2-D demos of Drifting Models.")
    parser.add_argument("what", choices=["fig3", "fig4", "ablation", "all"], nargs="?", default="all")
    parser.add_argument("--out", type=Path, default=Path("outputs/toy"), help="folder for the PNGs")
    parser.add_argument("--steps", type=int, default=None, help="training steps per case (default: 2000; fig3 1500)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per ablation variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--floor", action="store_true", help="fig3 with the released affinity floor (1e-6)")
    args = parser.parse_args(argv)
    for name in ("steps", "seeds", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1; got {getattr(args, name)}")
    # Far-apart samples give affinities in float32's denormal range, which CPUs compute many times slower;
    # flushing them to zero changes nothing measurable here (a whole-program setting, so it is set here, not
    # in the core).
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what in ("fig3", "all"):
        fig3(args.out, args.steps or 1500, affinity_floor=1e-6 if args.floor else 0.0)
    if args.what in ("fig4", "all"):
        fig4(args.out, args.steps or 2000)
    if args.what == "ablation":
        base = ABLATION_BASE if args.steps is None else replace(ABLATION_BASE, steps=args.steps)
        ablation(seeds=tuple(range(args.seeds)), base=base)


if __name__ == "__main__":
    main()
