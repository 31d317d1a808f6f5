"""The scripted expert's phase success: ``python -m envs.kitchen.stats --episodes 50 --seed 0``.

Each episode draws ``--n-subtasks`` (default 4) of ``--subtasks`` (comma-separated; default all 7) in a
random order (see ``envs.kitchen.expert.sample_subtasks``). Prints p1..pn (fraction of episodes completing
at least n subtasks), how often each subtask was completed when planned, the episode lengths, how often each
planned order was drawn and completed, and the time per episode.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from tqdm import tqdm

from envs.kitchen.env import SUBTASKS, KitchenEnv, phase_fractions
from envs.kitchen.expert import parse_subtasks, run_episode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subtasks", type=parse_subtasks, default=SUBTASKS,
                        help="comma-separated subtasks to draw from (default: all 7)")
    parser.add_argument("--n-subtasks", type=int, default=4)
    args = parser.parse_args(argv)
    env = KitchenEnv()
    n_completed, lengths = [], []
    planned, achieved = Counter(), Counter()  # per order (all planned subtasks done)
    subtask_planned, subtask_done = Counter(), Counter()
    start = time.perf_counter()
    for seed in tqdm(range(args.seed, args.seed + args.episodes), desc="kitchen expert"):
        episode = run_episode(env, seed, args.n_subtasks, args.subtasks)
        n_completed.append(len(episode["completed"]))
        lengths.append(len(episode["action"]))
        order = " -> ".join(episode["tasks"])
        planned[order] += 1
        achieved[order] += set(episode["tasks"]) <= set(episode["completed"])
        subtask_planned.update(episode["tasks"])
        subtask_done.update(set(episode["tasks"]) & set(episode["completed"]))
    seconds = (time.perf_counter() - start) / args.episodes
    print(f"episodes {args.episodes} (seeds {args.seed}..{args.seed + args.episodes - 1}), "
          f"{args.n_subtasks} of {', '.join(args.subtasks)}")
    print(" ".join(f"p{n}={p:.3f}" for n, p in phase_fractions(np.array(n_completed), args.n_subtasks).items()))
    print("completed-subtask counts:", np.bincount(n_completed, minlength=args.n_subtasks + 1).tolist())
    print("per subtask (done / planned):",
          ", ".join(f"{task} {subtask_done[task]}/{subtask_planned[task]}" for task in sorted(subtask_planned)))
    print(f"steps per episode: mean {np.mean(lengths):.1f}, max {max(lengths)}; {seconds:.2f} s per episode")
    print("orders (all done / drawn):")
    for order, count in planned.most_common():
        print(f"  {achieved[order]:3d}/{count:3d}  {order}")


if __name__ == "__main__":
    main()
