"""Kitchen's part of a policy evaluation with ``envs.common.runner.VectorEnvRunner``.

The generic runner scores an episode by its maximum reward; ``KitchenEnv``'s reward is the fraction of the
7 subtasks completed so far, so that maximum is DP's Kitchen score. This module supplies the env factory,
DP's "train" initial states, and the reduction of each episode's final ``info`` to DP's Kitchen log entries:
``{prefix}/mean_score``, ``{prefix}/p_{n}`` for n = 1..7 (fraction of episodes completing at least n
subtasks), ``{prefix}/first_{subtask}`` (share of episodes whose first completed subtask it is) and
``{prefix}/orders`` (per episode, in episode order, its completed subtasks joined by ">") and
``{prefix}/n_orders`` (how many different orders of at least two subtasks the episodes completed: more than one
means the policy keeps several of the demonstrations' orders).
``summarize(prefixes, final_infos)`` has the same signature as BlockPush's.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.common.runner import seeded_initial_states
from envs.kitchen.env import EPISODE_STEPS, SUBTASKS, KitchenEnv, phase_fractions


def make_env(obs_layout: str = "full", max_episode_steps: int = EPISODE_STEPS) -> KitchenEnv:
    """Env factory for vector envs (module-level, so ``functools.partial(make_env, ...)`` pickles)."""
    return KitchenEnv(obs_layout=obs_layout, max_episode_steps=max_episode_steps)


def train_initial_states(n_train: int = 6, start_seed: int = 0) -> list[np.ndarray]:
    """``get_state()`` vectors of the starts that seeds start_seed.. produce (the first demonstrations' starts)."""
    return seeded_initial_states(KitchenEnv, n_train, start_seed)


def summarize(prefixes: Sequence[str], final_infos: Sequence[dict]) -> dict:
    """DP's Kitchen log entries from each episode's prefix ("train"/"test") and final env ``info``."""
    if len(prefixes) != len(final_infos):
        raise ValueError(f"summarize: {len(prefixes)} prefixes for {len(final_infos)} episode infos")
    groups = collections.defaultdict(list)
    for prefix, info in zip(prefixes, final_infos, strict=True):
        groups[prefix].append(list(info["completed_subtasks"]))
    log: dict = {}
    for prefix, episodes in groups.items():
        log[f"{prefix}/orders"] = [">".join(completed) for completed in episodes]
        log[f"{prefix}/n_orders"] = len(distinct_orders(log[f"{prefix}/orders"]))
        n_completed = np.array([len(c) for c in episodes])
        log[f"{prefix}/mean_score"] = float(np.mean(n_completed) / len(SUBTASKS))
        for n, fraction in phase_fractions(n_completed).items():
            log[f"{prefix}/p_{n}"] = fraction
        for task in SUBTASKS:
            log[f"{prefix}/first_{task.replace(' ', '_')}"] = float(np.mean([c[:1] == [task] for c in episodes]))
    return log


def distinct_orders(orders: Sequence[str], min_subtasks: int = 2) -> collections.Counter:
    """How often each logged order (subtasks joined by ">") of at least ``min_subtasks`` subtasks occurs."""
    return collections.Counter(order for order in orders if order and order.count(">") + 1 >= min_subtasks)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m envs.kitchen.runner <eval_log.json> [--prefix test]``: the subtask orders of an evaluation written by
    ``drifting-policy eval`` (training logs keep numbers only: their ``{prefix}/n_orders``)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("eval_log", help="eval_log.json of `drifting-policy eval checkpoint=... output_dir=...`")
    parser.add_argument("--prefix", default="test")
    args = parser.parse_args(argv)
    log = json.loads(Path(args.eval_log).read_text())
    key = f"{args.prefix}/orders"
    if key not in log:
        raise SystemExit(f"{args.eval_log} has no {key!r} (not a Kitchen evaluation?); keys: {sorted(log)[:10]} ...")
    orders = distinct_orders(log[key])
    print(f"{len(log[key])} {args.prefix} episodes, {len(orders)} different orders of >= 2 subtasks")
    for order, count in orders.most_common():
        print(f"  {count:3d}  {order.replace('>', ' -> ')}")


if __name__ == "__main__":
    main()
