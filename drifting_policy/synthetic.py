"""A synthetic bimodal policy task: does a policy keep both modes of the demonstrations?

Observation o ~ U[-1, 1] (one step, 1-D). The demonstrated chunk of T 2-D actions is a straight line
from the origin, scaled by s = 0.5 + |o| and pointing up-right or down-left with probability 1/2 each:

    action[t] = m * s * (t + 1) / T * (1, 1) / sqrt(2),    m = +1 or -1

A policy that averages the modes outputs the origin; one that collapses keeps one direction. We count
a generated chunk as *on a mode* when its RMS distance (over the chunk, data units) to the nearest of the
two demonstrated chunks for its observation is below ``tolerance``; the mode shares are the fractions of
all samples on each mode.

    python -m drifting_policy.synthetic                  # train drifting (defaults) and DDPM once, print results
    python -m drifting_policy.synthetic --floor-sweep    # drifting, affinity_floor 1e-6 vs 0 x G = 8, 16, 32
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from drifting import EMA
from drifting_policy.normalizer import LinearNormalizer
from drifting_policy.policies import DiffusionPolicy, DiffusionPolicyConfig, DriftingPolicy, DriftingPolicyConfig

DIRECTION = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)


def mode_chunks(obs: torch.Tensor, horizon: int) -> torch.Tensor:
    """The two demonstrated chunks per observation: obs (N,) -> (N, 2, T, 2), [up-right, down-left]."""
    ramp = torch.arange(1, horizon + 1, dtype=torch.float32) / horizon
    line = (0.5 + obs.abs())[:, None, None] * ramp[None, :, None] * DIRECTION  # (N, T, 2)
    return torch.stack([line, -line], dim=1)


def bimodal_batch(batch_size: int, horizon: int = 8, generator: torch.Generator | None = None) -> dict:
    """{'obs': (B, 1, 1), 'action': (B, T, 2)} with each demonstration's mode drawn with probability 1/2."""
    obs = torch.rand(batch_size, generator=generator) * 2 - 1
    mode = torch.randint(0, 2, (batch_size,), generator=generator)
    action = mode_chunks(obs, horizon)[torch.arange(batch_size), mode]
    return {"obs": obs[:, None, None], "action": action}


def bimodal_normalizer(horizon: int = 8, n: int = 4096) -> LinearNormalizer:
    normalizer = LinearNormalizer()
    data = bimodal_batch(n, horizon, torch.Generator().manual_seed(0))
    normalizer.fit({"obs": data["obs"].reshape(-1, 1), "action": data["action"].reshape(-1, 2)})
    return normalizer


def make_bimodal_policy(method: str = "drifting", horizon: int = 8, down_dims=(32, 64), seed: int = 0, **options):
    """A small-UNet policy for the task, normalizer set; ``options`` go to the method's config."""
    torch.manual_seed(seed)
    shapes = dict(obs_dim=1, action_dim=2, horizon=horizon, n_obs_steps=1, n_action_steps=horizon,
                  down_dims=tuple(down_dims), diffusion_step_embed_dim=64)
    if method == "drifting":
        policy = DriftingPolicy(DriftingPolicyConfig(**shapes, **options))
    elif method == "diffusion":
        policy = DiffusionPolicy(DiffusionPolicyConfig(**shapes, **options))
    else:
        raise ValueError(f"method must be 'drifting' or 'diffusion'; got {method!r}")
    policy.set_normalizer(bimodal_normalizer(horizon))
    return policy


def train_bimodal(policy, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                  ema: EMA | None = None) -> list[float]:
    """AdamW on fresh batches (updating ``ema`` after each step when given); returns the loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-6)
    policy.train()
    losses = []
    for _ in range(steps):
        loss = policy.compute_loss(bimodal_batch(batch_size, policy.config.horizon, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(policy)
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def evaluate_bimodal(policy, n_obs: int = 64, samples_per_obs: int = 16, tolerance: float = 0.1,
                     seed: int = 1) -> dict[str, float]:
    """Shares of generated chunks on a mode and on each mode, the mean distance to the nearest mode, and the
    share nearer the up-right mode (within any distance). The two modes are at least 0.63 apart (o = 0)."""
    policy.eval()
    obs = torch.linspace(-1, 1, n_obs).repeat_interleave(samples_per_obs)
    chunks = policy.predict_action({"obs": obs[:, None, None]}, generator=torch.Generator().manual_seed(seed))
    modes = mode_chunks(obs, policy.config.horizon)  # (N, 2, T, 2)
    distance = (chunks["action_pred"][:, None] - modes).square().sum(-1).mean(-1).sqrt()  # (N, 2) RMS over T
    nearest_distance, nearest = distance.min(dim=1)
    on_mode = nearest_distance < tolerance
    return {
        "on_mode": float(on_mode.float().mean()),
        "up_right": float((on_mode & (nearest == 0)).float().mean()),
        "down_left": float((on_mode & (nearest == 1)).float().mean()),
        "mean_distance": float(nearest_distance.mean()),
        "nearest_up_right": float((nearest == 0).float().mean()),  # share nearer the up-right mode, any distance
    }


def run(method: str, steps: int, seed: int = 0, batch_size: int = 32, eval_every: int = 0, label: str = "",
        ema: bool = False, **options) -> dict[str, float]:
    """Train a fresh policy for ``steps`` and evaluate it (also every ``eval_every`` steps, printed); with
    ``ema`` the evaluated weights are Diffusion Policy's EMA (power 0.75 warm-up, max decay 0.9999).
    Each stretch between evaluations is one ``train_bimodal`` call (fresh AdamW state, data seed
    ``seed + steps done``), so results depend on ``eval_every``: quote it with the numbers."""
    start = time.perf_counter()
    policy = make_bimodal_policy(method, seed=seed, **options)
    average = EMA(policy, decay=0.9999, power=0.75) if ema else None
    losses, done = [], 0
    while done < steps:
        chunk = min(eval_every or steps, steps - done)
        losses += train_bimodal(policy, chunk, batch_size=batch_size, seed=seed + done, ema=average)
        done += chunk
        result = evaluate_bimodal(policy if average is None else average.model)
        result.update(final_loss=sum(losses[-50:]) / len(losses[-50:]), seconds=time.perf_counter() - start)
        print(_row(f"{label} {done} steps", result), flush=True)
    return result


def _row(label: str, r: dict) -> str:
    return (f"{label:<38} on_mode {r['on_mode']:6.1%}  up_right {r['up_right']:6.1%}  down_left {r['down_left']:6.1%}"
            f"  mean_dist {r['mean_distance']:.3f}  ({r['seconds']:.0f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floor-sweep", action="store_true",
                        help="drifting policy only: every affinity_floor in --floors x every G in --n-generated")
    parser.add_argument("--floors", type=float, nargs="+", default=[1e-6, 0.0])
    parser.add_argument("--n-generated", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--per-observation", choices=["on", "off"], default=None,
                        help="drift_per_observation of the drifting runs (default: the config's default)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each drifting run")
    parser.add_argument("--diffusion-steps", type=int, default=4000,
                        help="training steps of the DDPM baseline (evaluated on its EMA weights, as DP does)")
    parser.add_argument("--diffusion-eval-every", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32, help="observations per batch")
    parser.add_argument("--down-dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    common = dict(seed=args.seed, batch_size=args.batch_size, eval_every=args.eval_every,
                  down_dims=tuple(args.down_dims))
    drifting = {} if args.per_observation is None else {"drift_per_observation": args.per_observation == "on"}
    print(f"bimodal task: T=8, UNet down_dims {tuple(args.down_dims)}, {args.batch_size} observations per batch, "
          f"AdamW 1e-3, seed {args.seed}; on a mode = RMS distance < 0.1 to the nearest demonstrated chunk "
          f"(64 observations x 16 samples)", flush=True)
    if args.floor_sweep:
        for n_generated in args.n_generated:
            for floor in args.floors:
                run("drifting", args.steps, label=f"drifting G={n_generated:<2} floor={floor:g}",
                    n_generated=n_generated, affinity_floor=floor, **drifting, **common)
        return
    run("drifting", args.steps, label="drifting", **drifting, **common)
    run("diffusion", args.diffusion_steps, label="DDPM-100 (EMA)", ema=True,
        **{**common, "eval_every": args.diffusion_eval_every})


if __name__ == "__main__":
    main()
