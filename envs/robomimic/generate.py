"""Generate robomimic-layout hdf5 demonstrations with the scripted experts.

    python -m envs.robomimic.generate --task lift --episodes 200 --seed 0 --out data/lift_ph.hdf5 \
        [--images] [--abs-action] [--workers 2]

Episode ``i`` is the expert's rollout from ``reset(seed + i)`` (seeds count on past failed
episodes, which are left out), so a file is a function of its arguments (``--workers`` only
changes how many processes roll out episodes, not the file). Evaluation seeds in
Diffusion Policy's runners start at 100000; keep ``seed + attempts`` below that.
The ``env_args`` stored are ``make_env_meta(task, abs_action, images)``: with ``--abs-action``
the actions are the controller's absolute target (position, axis-angle, gripper) and an env
created from that meta (``control_delta=False``) replays them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drifting_policy.data.robomimic_hdf5 import write_robomimic_hdf5
from envs.robomimic.env import make_env_meta
from envs.robomimic.expert import EXPERTS, Episode, expert_episodes

VALID_FRACTION = 0.1


def episode_to_demo(episode: Episode, abs_action: bool) -> dict:
    """An expert episode as the writer's demo dict (obs[t] precedes actions[t], next_obs[t] follows it)."""
    steps = len(episode)
    frames = episode.obs + [episode.final_obs]
    keys = frames[0].keys()
    dones = np.zeros(steps, dtype=np.int64)
    dones[-1] = 1
    return {
        "obs": {k: np.stack([f[k] for f in frames[:-1]]) for k in keys},
        "next_obs": {k: np.stack([f[k] for f in frames[1:]]) for k in keys},
        "actions": np.stack(episode.abs_actions if abs_action else episode.actions),
        "states": np.stack(episode.states),
        "rewards": np.asarray(episode.rewards, dtype=np.float64),
        "dones": dones,
    }


def train_valid_masks(n_demos: int, seed: int) -> dict[str, list[str]]:
    """robomimic's ``mask/train`` and ``mask/valid`` filter keys: a seeded 90/10 split."""
    order = np.random.default_rng(seed).permutation(n_demos)
    n_valid = int(round(VALID_FRACTION * n_demos)) if n_demos > 1 else 0
    names = [f"demo_{i}" for i in range(n_demos)]
    return {
        "train": [names[i] for i in sorted(order[n_valid:])],
        "valid": [names[i] for i in sorted(order[:n_valid])],
    }


def generate(
    task: str,
    episodes: int,
    seed: int,
    out: str | Path,
    images: bool = False,
    abs_action: bool = False,
    max_attempts: int | None = None,
    workers: int = 1,
) -> Path:
    """Roll out ``task``'s expert until ``episodes`` succeed and write them to ``out``."""
    if episodes < 1:
        raise ValueError(f"generate: episodes must be >= 1; got {episodes}")
    env_meta = make_env_meta(task, abs_action=abs_action, image=images)
    max_attempts = 2 * episodes if max_attempts is None else max_attempts
    demos, attempts, lengths = [], 0, []
    progress = tqdm(total=episodes, desc=f"{task} demos")
    # The expert acts with delta actions; the absolute ones are read off the controller.
    rollouts = expert_episodes(task, range(seed, seed + max_attempts), images=images, workers=workers)
    for attempts, episode in enumerate(rollouts, start=1):
        if episode.success:
            demos.append(episode_to_demo(episode, abs_action))
            lengths.append(len(episode))
            progress.update(1)
        progress.set_postfix(failed=attempts - len(demos), mean_len=f"{np.mean(lengths):.0f}" if lengths else "-")
        if len(demos) == episodes:
            break
    else:
        raise RuntimeError(f"{task}: only {len(demos)} of {attempts} expert episodes succeeded; wanted {episodes}")
    progress.close()
    return write_robomimic_hdf5(out, demos, env_meta, masks=train_valid_masks(len(demos), seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(EXPERTS), required=True)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="hdf5 file to write")
    parser.add_argument("--images", action="store_true", help="also record the task's two cameras")
    parser.add_argument("--abs-action", action="store_true", help="store absolute pose actions (control_delta=False)")
    parser.add_argument("--workers", type=int, default=1, help="processes rolling out episodes (same file)")
    args = parser.parse_args()
    start = time.time()
    path = generate(args.task, args.episodes, args.seed, args.out, args.images, args.abs_action,
                    workers=args.workers)
    print(f"wrote {args.episodes} {args.task} demos to {path} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
