"""Does a policy keep both modes of its demonstrations? Small policies trained on the synthetic bimodal task.

The task and its metric are ``envs/bimodal/task.py`` (2 modes of an 8x2 action chunk given a 1-D observation;
"on a mode" = RMS distance < 0.1 to a demonstrated chunk). Here: a small-UNet drifting or DDPM policy with
the task's normalizer, AdamW on fresh batches, and the evaluation every ``--eval-every`` steps. The floor sweep
is what set the drifting policy's defaults (``affinity_floor=0``, ``drift_per_observation=True``, G = 8).

    python benchmarks/bimodal_modes.py                  # train drifting (defaults) and DDPM once, print results
    python benchmarks/bimodal_modes.py --floor-sweep    # drifting, affinity_floor 1e-6 vs 0 x G = 8, 16, 32
"""
from __future__ import annotations

import argparse
import time

import torch

from drifting import EMA
from drifting_policy.normalizer import LinearNormalizer
from drifting_policy.policies import DiffusionPolicy, DiffusionPolicyConfig, DriftingPolicy, DriftingPolicyConfig
from envs.bimodal.task import bimodal_batch, evaluate_bimodal


def bimodal_normalizer(horizon: int = 8, n: int = 4096) -> LinearNormalizer:
    """Fitted on a fixed-seed sample of the task, so every policy of a sweep sees the same normalisation."""
    normalizer = LinearNormalizer()
    data = bimodal_batch(n, horizon, torch.Generator().manual_seed(0))
    normalizer.fit({"obs": data["obs"].reshape(-1, 1), "action": data["action"].reshape(-1, 2)})
    return normalizer


def make_bimodal_policy(method: str = "drifting", horizon: int = 8, down_dims=(32, 64), seed: int = 0, **options):
    """A small-UNet policy for the task, normalizer set; ``options`` go to the method's config."""
    torch.manual_seed(seed)
    shapes = {"obs_dim": 1, "action_dim": 2, "horizon": horizon, "n_obs_steps": 1, "n_action_steps": horizon,
              "down_dims": tuple(down_dims), "diffusion_step_embed_dim": 64}
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
    common = {"seed": args.seed, "batch_size": args.batch_size, "eval_every": args.eval_every,
              "down_dims": tuple(args.down_dims)}
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
