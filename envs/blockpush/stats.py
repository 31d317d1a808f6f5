"""How well the BlockPush oracle does, and how its episodes split among the four plans.

    python -m envs.blockpush.stats --episodes 100 --seed 0

Prints p1/p2 (DP's phase metrics), the share of each plan (first block, its zone), the share of each
final assignment among p2 episodes, episode lengths and time per episode.
"""

import argparse
import collections
import time

import numpy as np

from envs.blockpush.env import BlockPushMultimodalEnv, phase_metrics
from envs.blockpush.generate import run_oracle_episode
from envs.blockpush.oracle import PLANS, MultimodalPushOracle

ASSIGNMENT_NAMES = {0: "block->target, block2->target2", 1: "block->target2, block2->target", -1: "none"}


def oracle_stats(n_episodes, seed):
    env = BlockPushMultimodalEnv()
    oracle = MultimodalPushOracle()
    p1, p2, lengths, plans, assignments, failures = [], [], [], collections.Counter(), collections.Counter(), []
    start = time.perf_counter()
    for attempt in range(n_episodes):
        episode = run_oracle_episode(env, oracle, seed, attempt)
        metrics = phase_metrics(episode["rewards"])
        p1.append(metrics["p1"])
        p2.append(metrics["p2"])
        lengths.append(len(episode["rewards"]))
        plans[episode["plan"]] += 1
        assignments[episode["info"]["assignment"]] += 1
        if not metrics["p2"]:
            failures.append(seed + attempt)
    elapsed = time.perf_counter() - start
    env.close()
    return {
        "p1": float(np.mean(p1)), "p2": float(np.mean(p2)), "plans": plans, "assignments": assignments,
        "mean_length": float(np.mean(lengths)), "seconds_per_episode": elapsed / n_episodes,
        "failed_seeds": failures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stats = oracle_stats(args.episodes, args.seed)
    n = args.episodes
    print(f"oracle over {n} episodes (env seeds {args.seed}..{args.seed + n - 1}): "
          f"p1 {stats['p1']:.3f}, p2 {stats['p2']:.3f}, mean length {stats['mean_length']:.1f} steps, "
          f"{stats['seconds_per_episode']:.2f} s per episode")
    for index, (block, zone) in enumerate(PLANS):
        print(f"  plan {index} (block{block + 1 if block else ''} first, into target{zone + 1 if zone else ''}): "
              f"{stats['plans'][index] / n:.1%}")
    for assignment, name in ASSIGNMENT_NAMES.items():
        print(f"  final assignment {name}: {stats['assignments'][assignment] / n:.1%}")
    print(f"  failed seeds: {stats['failed_seeds']}")


if __name__ == "__main__":
    main()
