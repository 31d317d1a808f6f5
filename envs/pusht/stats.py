"""Statistics of a PushT demonstration dataset, and the scripted expert's score on DP's test seeds.

    python -m envs.pusht.stats envs/pusht/data/pusht_expert_lowdim.zarr.zip [--expert-seeds 50]

Multimodality: pairs of near-identical states from different episodes (agent within ~15 px, block within ~10 px
and ~0.15 rad, measured jointly), and the share of those pairs whose commanded motions (action minus agent
position, both longer than 2 px) point more than 90 degrees apart. A unimodal (deterministic) demonstrator
can still score well above 0 on this, because its plan (where it is heading) is not part of the state.

Expert divergence: the same start state run with different expert seeds; the share of pairs of runs whose agents
are more than 60 px apart (about the T's width) after 40 steps, i.e. that took different ways. A deterministic
expert scores 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.pusht.env import PushTEnv
from envs.pusht.expert import PushTExpert
from envs.pusht.generate import run_expert_episode


def multimodality(
    state: np.ndarray,
    action: np.ndarray,
    episode_ends: np.ndarray,
    agent_tol: float = 15.0,
    block_tol: float = 10.0,
    angle_tol: float = 0.15,
    min_move: float = 2.0,
    max_pairs: int = 200_000,
) -> tuple[float, int]:
    """Share of near-identical state pairs (different episodes) whose actions point > 90 degrees apart, and the
    number of pairs it is measured on."""
    episode = np.searchsorted(episode_ends, np.arange(len(state)), side="right")
    move = action - state[:, :2]
    features = np.concatenate(
        [
            state[:, :2] / agent_tol,
            state[:, 2:4] / block_tol,
            np.stack([np.cos(state[:, 4]), np.sin(state[:, 4])], axis=1) / angle_tol,
        ],
        axis=1,
    )
    pairs = cKDTree(features).query_pairs(r=1.0, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    moved = np.linalg.norm(move, axis=1) > min_move
    keep = (episode[i] != episode[j]) & moved[i] & moved[j]
    i, j = i[keep], j[keep]
    if len(i) > max_pairs:
        pick = np.random.default_rng(0).choice(len(i), max_pairs, replace=False)
        i, j = i[pick], j[pick]
    if len(i) == 0:
        return float("nan"), 0
    cos = (move[i] * move[j]).sum(1) / (np.linalg.norm(move[i], axis=1) * np.linalg.norm(move[j], axis=1))
    return float(np.mean(cos < 0.0)), int(len(i))


def expert_divergence(
    start_seeds: range | list[int], n_expert_seeds: int = 4, steps: int = 40, distance: float = 60.0
) -> float:
    """Share of pairs of expert runs from the same start (different expert seeds) whose agents end up more than
    ``distance`` px apart after ``steps`` steps."""
    env, far = PushTEnv(obs_type="state"), []
    for start in start_seeds:
        ends = []
        for expert_seed in range(n_expert_seeds):
            _, info = env.reset(seed=start)
            expert = PushTExpert(seed=expert_seed)
            for _ in range(steps):
                _, _, terminated, truncated, info = env.step(expert.act(info["state"]))
                if terminated or truncated:
                    break
            ends.append(info["state"][:2])
        ends = np.array(ends)
        dist = np.linalg.norm(ends[:, None] - ends[None], axis=-1)[np.triu_indices(n_expert_seeds, 1)]
        far.extend(dist > distance)
    return float(np.mean(far))


def dataset_summary(buffer: ReplayBuffer) -> dict[str, float]:
    for key in ("state", "action"):
        if key not in buffer:
            raise KeyError(f"PushT dataset needs data/{key}; found {buffer.keys()}")
    lengths = buffer.episode_lengths
    share, n_pairs = multimodality(buffer["state"], buffer["action"], buffer.episode_ends)
    return {
        "episodes": buffer.n_episodes,
        "steps": buffer.n_steps,
        "mean_length": float(lengths.mean()),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "action_min": buffer["action"].min(0).tolist(),
        "action_max": buffer["action"].max(0).tolist(),
        "multimodality": share,
        "multimodality_pairs": n_pairs,
    }


def evaluate_expert(seeds: range | list[int], expert: PushTExpert | None = None) -> dict[str, float]:
    """Success rate, mean episode length and mean max coverage of the expert from the env's seeded resets."""
    env, expert = PushTEnv(obs_type="state"), expert or PushTExpert()
    start, cpu_start = time.perf_counter(), time.process_time()
    episodes = [run_expert_episode(env, expert, seed) for seed in seeds]
    return {
        "n": len(episodes),
        "success_rate": float(np.mean([e.success for e in episodes])),
        "mean_length": float(np.mean([e.length for e in episodes])),
        "mean_max_coverage": float(np.mean([e.max_coverage for e in episodes])),
        "seconds_per_episode": (time.perf_counter() - start) / len(episodes),
        "cpu_seconds_per_episode": (time.process_time() - cpu_start) / len(episodes),  # env + expert
        "failed_seeds": [e.seed for e in episodes if not e.success],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, nargs="?",
                        help="replay buffer (zarr dir or .zarr.zip); omit for expert only")
    parser.add_argument("--expert-seeds", type=int, default=50,
                        help="test seeds 100000... to run the expert on (0: skip)")
    args = parser.parse_args(argv)
    if args.path is not None:
        summary = dataset_summary(ReplayBuffer.copy_from_path(args.path, keys=["state", "action"]))
        print(f"dataset {args.path}")
        for key, value in summary.items():
            print(f"  {key}: {value}")
    if args.expert_seeds > 0:
        result = evaluate_expert(range(100000, 100000 + args.expert_seeds))
        print(f"expert on test seeds 100000..{100000 + args.expert_seeds - 1}")
        for key, value in result.items():
            print(f"  {key}: {value}")
        divergence = expert_divergence(range(100000, 100000 + min(args.expert_seeds, 30)))
        print(f"  divergence (same start, 4 expert seeds, > 60 px apart after 40 steps): {divergence:.3f}")


if __name__ == "__main__":
    main()
