"""Generate PushT demonstrations with the scripted expert, in Diffusion Policy's zarr replay-buffer layout.

    python -m envs.pusht.generate --episodes 200 --seed 0 --out data/pusht_expert.zarr.zip [--images]

Per step (the state before the action): ``state`` (N, 5) agent x, y, block x, y, angle in [0, 2pi);
``keypoint`` (N, 9, 2) block keypoints; ``action`` (N, 2) target agent position; ``n_contacts`` (N, 1) contact
points per physics step during the previous env step; with ``--images`` also ``img`` (N, 96, 96, 3) uint8, the
observation rendered at that state. Only successful episodes (coverage above 0.95 within 300 steps) are kept; the
generator keeps drawing episode seeds until it has ``--episodes`` of them and reports the success share.
Everything is a function of ``--seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.pusht.env import MAX_EPISODE_STEPS, PushTEnv, block_keypoints
from envs.pusht.expert import PushTExpert

# Episode seeds are drawn above the evaluation seeds (100000...) so demonstrations never start from a test state.
FIRST_EPISODE_SEED = 1_000_000


@dataclasses.dataclass
class ExpertEpisode:
    seed: int
    success: bool
    length: int
    max_coverage: float
    data: dict[str, np.ndarray] | None


def run_expert_episode(env: PushTEnv, expert: PushTExpert, seed: int, record: bool = False, images: bool = False):
    """Run the expert from the env's seeded reset; with ``record``, return the per-step arrays too."""
    _, info = env.reset(seed=seed)
    expert.reset(seed)
    steps: dict[str, list] = {key: [] for key in ("state", "keypoint", "action", "n_contacts", "img")}
    max_coverage, n_contacts, terminated = info["coverage"], 0, False
    for t in range(MAX_EPISODE_STEPS):
        state = info["state"]
        action = expert.act(state)
        if record:
            steps["state"].append(np.concatenate([state[:4], [state[4] % (2 * np.pi)]]))
            steps["keypoint"].append(block_keypoints(state[2:5]))
            steps["action"].append(action)
            steps["n_contacts"].append([n_contacts])
            if images:
                steps["img"].append(env.render_image())
        _, _, terminated, truncated, info = env.step(action)
        max_coverage, n_contacts = max(max_coverage, info["coverage"]), info["n_contacts"]
        if terminated or truncated:
            break
    data = None
    if record:
        dtypes = {"img": np.uint8}
        data = {key: np.asarray(v, dtype=dtypes.get(key, np.float32)) for key, v in steps.items() if v}
    return ExpertEpisode(seed, bool(terminated), t + 1, float(max_coverage), data)


def generate(n_episodes: int, seed: int, images: bool = False, show_progress: bool = True) -> tuple[ReplayBuffer, dict]:
    """Collect ``n_episodes`` successful expert episodes; returns the buffer and a summary."""
    rng = np.random.default_rng(seed)
    env = PushTEnv(obs_type="state")
    expert = PushTExpert()
    buffer = ReplayBuffer.create_empty()
    attempts, start = 0, time.perf_counter()
    with tqdm(total=n_episodes, desc="pusht expert episodes", disable=not show_progress) as progress:
        while buffer.n_episodes < n_episodes:
            episode_seed = int(rng.integers(FIRST_EPISODE_SEED, 2**31 - 1))
            episode = run_expert_episode(env, expert, episode_seed, record=True, images=images)
            attempts += 1
            if episode.success:
                buffer.add_episode(episode.data)
                progress.update(1)
    summary = {
        "episodes": buffer.n_episodes,
        "attempts": attempts,
        "success_share": buffer.n_episodes / attempts,
        "seconds": time.perf_counter() - start,
    }
    return buffer, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="zarr directory or .zarr.zip")
    parser.add_argument("--images", action="store_true", help="also store 96x96 RGB observations as 'img'")
    args = parser.parse_args(argv)
    buffer, summary = generate(args.episodes, args.seed, images=args.images)
    path = buffer.save_to_path(args.out)
    print(
        f"wrote {path}: {summary['episodes']} episodes, {buffer.n_steps} steps "
        f"(kept {summary['episodes']}/{summary['attempts']} = {summary['success_share']:.3f} successful), "
        f"{summary['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
