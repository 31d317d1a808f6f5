"""The scripted expert's phase success: ``python -m envs.kitchen.stats --episodes 50 --seed 0``.

Prints p1..p4 (fraction of episodes completing at least n subtasks), how often each planned order was
drawn and completed, and the time per episode.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from tqdm import tqdm

from envs.kitchen.env import KitchenEnv, phase_fractions
from envs.kitchen.expert import run_episode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    env = KitchenEnv()
    n_completed, planned, achieved, lengths = [], Counter(), Counter(), []
    start = time.perf_counter()
    for seed in tqdm(range(args.seed, args.seed + args.episodes), desc="kitchen expert"):
        episode = run_episode(env, seed)
        n_completed.append(len(episode["completed"]))
        lengths.append(len(episode["action"]))
        planned[" -> ".join(episode["tasks"])] += 1
        if len(episode["completed"]) == len(episode["tasks"]):
            achieved[" -> ".join(episode["tasks"])] += 1
    seconds = (time.perf_counter() - start) / args.episodes
    print(f"episodes {args.episodes} (seeds {args.seed}..{args.seed + args.episodes - 1})")
    print(" ".join(f"p{n}={p:.3f}" for n, p in phase_fractions(np.array(n_completed), 4).items()))
    print("completed-subtask counts:", np.bincount(n_completed, minlength=5).tolist())
    print(f"steps per episode: mean {np.mean(lengths):.1f}, max {max(lengths)}; {seconds:.2f} s per episode")
    print("orders (all 4 done / drawn):")
    for order, count in planned.most_common():
        print(f"  {achieved[order]:3d}/{count:3d}  {order}")


if __name__ == "__main__":
    main()
