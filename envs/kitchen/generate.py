"""Expert Franka Kitchen demonstrations in Diffusion Policy's zarr layout, and BET's relay-kitchen arrays.

    python -m envs.kitchen.generate --episodes 300 --seed 0 --out data/kitchen_expert.zarr.zip

writes ``data/obs`` (N, 59) float32 (``KitchenEnv``'s "full" layout; ``--obs-layout dp60`` for the 60-D
relay-kitchen layout), ``data/action`` (N, 9) float32, ``data/state`` (N, 59) float64 (qpos + qvel before
each action, for replay) and ``meta/episode_ends``. Episode i uses env seed ``seed + i``, so a run is
deterministic from ``--seed``. Each episode does 4 subtasks drawn from ``--subtasks`` (comma-separated;
default all 7 of the benchmark) in a random order (``envs.kitchen.expert.sample_subtasks``);
``--subtasks "microwave,kettle,light switch,slide cabinet"`` gives the earlier expert's 4-subtask episodes.

``bet_arrays_to_replay_buffer(dir)`` reads BET's ``observations_seq.npy`` (E, T, 60),
``actions_seq.npy`` (E, T, 9) and ``existence_mask.npy`` (E, T) into the same layout (keys ``obs``,
``action``), as DP's ``kitchen_lowdim`` dataset does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.kitchen.env import SUBTASKS, KitchenEnv
from envs.kitchen.expert import parse_subtasks, run_episode

BET_FILES = ("observations_seq.npy", "actions_seq.npy", "existence_mask.npy")


def generate(episodes: int, seed: int, obs_layout: str = "full", progress: bool = True,
             subtasks: Sequence[str] = SUBTASKS) -> tuple[ReplayBuffer, list[dict]]:
    """Run the expert for ``episodes`` seeds from ``seed``, each on 4 subtasks drawn from ``subtasks``;
    returns the buffer and per-episode summaries."""
    env = KitchenEnv(obs_layout=obs_layout)
    buffer = ReplayBuffer.create_empty()
    summaries = []
    for index in tqdm(range(episodes), desc="kitchen expert", disable=not progress):
        episode = run_episode(env, seed + index, subtasks=subtasks)
        buffer.add_episode({"obs": episode["obs"].astype(np.float32),
                            "action": episode["action"].astype(np.float32),
                            "state": episode["state"]})
        summaries.append({"seed": seed + index, "tasks": episode["tasks"], "completed": episode["completed"]})
    env.close()
    return buffer, summaries


def bet_arrays_to_replay_buffer(directory: str | Path) -> ReplayBuffer:
    """BET's relay-kitchen arrays -> ReplayBuffer with ``obs`` (60-D) and ``action`` (9-D), float32.

    Each episode keeps its first ``existence_mask[i].sum()`` steps (the mask marks real steps, padding
    follows them).
    """
    directory = Path(directory)
    missing = [name for name in BET_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: missing BET relay-kitchen file(s) {missing}")
    observations, actions, mask = (np.load(directory / name) for name in BET_FILES)
    if observations.ndim != 3 or actions.ndim != 3 or mask.ndim != 2:
        raise ValueError(f"{directory}: expected observations (E, T, D), actions (E, T, 9), mask (E, T); got "
                         f"{observations.shape}, {actions.shape}, {mask.shape}")
    if not observations.shape[:2] == actions.shape[:2] == mask.shape:
        raise ValueError(f"{directory}: episode/time shapes differ: observations {observations.shape}, "
                         f"actions {actions.shape}, existence_mask {mask.shape}")
    buffer = ReplayBuffer.create_empty()
    for obs, action, exists in zip(observations, actions, mask, strict=True):
        length = int(exists.sum())
        buffer.add_episode({"obs": obs[:length].astype(np.float32), "action": action[:length].astype(np.float32)})
    return buffer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--obs-layout", choices=["full", "dp60"], default="full")
    parser.add_argument("--subtasks", type=parse_subtasks, default=SUBTASKS,
                        help="comma-separated subtasks each episode draws 4 of (default: all 7)")
    parser.add_argument("--out", type=Path, help="output .zarr.zip or .zarr directory")
    parser.add_argument("--from-bet", type=Path, help="convert BET's relay-kitchen arrays in this directory instead")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out is required")
    if args.from_bet is not None:
        buffer = bet_arrays_to_replay_buffer(args.from_bet)
    else:
        buffer, summaries = generate(args.episodes, args.seed, args.obs_layout, subtasks=args.subtasks)
        counts = np.array([len(s["completed"]) for s in summaries])
        print("completed subtasks per episode:", np.bincount(counts, minlength=5).tolist())
    buffer.save_to_path(args.out)
    print(f"wrote {buffer.n_episodes} episodes, {buffer.n_steps} steps to {args.out}")


if __name__ == "__main__":
    main()
