"""Generate PushT demonstrations with the scripted expert, in Diffusion Policy's zarr replay-buffer layout.

    python -m envs.pusht.generate --episodes 200 --seed 0 --out data/pusht_expert.zarr.zip [--images] [--perturb 40]

Per step (the state before the action): ``state`` (N, 5) agent x, y, block x, y, angle in [0, 2pi);
``keypoint`` (N, 9, 2) block keypoints; ``action`` (N, 2) target agent position; ``n_contacts`` (N, 1) contact
points per physics step during the previous env step; with ``--images`` also ``img`` (N, 96, 96, 3) uint8, the
observation rendered at that state. Only successful episodes (coverage above 0.95 within 300 steps) are kept; the
generator keeps drawing episode seeds until it has ``--episodes`` of them and reports the success share.
Everything is a function of ``--seed``.

``--perturb PIXELS`` shoves the agent off course now and then (DART, Laskey et al. 2017): about every 50 steps the
env executes, for 8 steps, the expert's target plus a random offset (normal, PIXELS per axis), while ``action``
records the expert's own target. A clean expert only visits states on its own path, so a cloned policy that strays
finds itself where no demonstration has been (the T shoved towards a wall, the agent stuck beside it); perturbed
episodes show the expert correcting. Shoves stop once the T covers 80% of the goal: the expert's last pushes move it
a few pixels, and with shoves on it rarely finishes.

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


SHOVE_PROBABILITY, SHOVE_STEPS, SHOVE_COVERAGE_LIMIT = 0.02, 8, 0.8


def run_expert_episode(
    env: PushTEnv, expert: PushTExpert, seed: int, record: bool = False, images: bool = False, perturb: float = 0.0
):
    """Run the expert from the env's seeded reset; with ``record``, return the per-step arrays too.

    With ``perturb`` (pixels) the env sometimes executes the expert's target plus an offset drawn from ``seed``
    (see the module's doc); the recorded action is always the expert's own.
    """
    _, info = env.reset(seed=seed)
    expert.reset(seed)
    shove_rng, shove, shove_left = np.random.default_rng([seed, 1]), np.zeros(2), 0
    steps: dict[str, list] = {key: [] for key in ("state", "keypoint", "action", "n_contacts", "img")}
    max_coverage, n_contacts, terminated = info["coverage"], 0, False
    for t in range(MAX_EPISODE_STEPS):  # noqa: B007  (read after the loop: the episode's length)
        state = info["state"]
        action = expert.act(state)
        if record:
            steps["state"].append(np.concatenate([state[:4], [state[4] % (2 * np.pi)]]))
            steps["keypoint"].append(block_keypoints(state[2:5]))
            steps["action"].append(action)
            steps["n_contacts"].append([n_contacts])
            if images:
                steps["img"].append(env.render_image())
        eligible = perturb > 0 and shove_left == 0 and info["coverage"] < SHOVE_COVERAGE_LIMIT
        if eligible and shove_rng.random() < SHOVE_PROBABILITY:
            shove, shove_left = shove_rng.normal(0.0, perturb, 2), SHOVE_STEPS
        if shove_left > 0:
            action, shove_left = action + shove, shove_left - 1
        _, _, terminated, truncated, info = env.step(action)
        max_coverage, n_contacts = max(max_coverage, info["coverage"]), info["n_contacts"]
        if terminated or truncated:
            break
    data = None
    if record:
        dtypes = {"img": np.uint8}
        data = {key: np.asarray(v, dtype=dtypes.get(key, np.float32)) for key, v in steps.items() if v}
    return ExpertEpisode(seed, bool(terminated), t + 1, float(max_coverage), data)


def generate(
    n_episodes: int, seed: int, images: bool = False, perturb: float = 0.0, show_progress: bool = True
) -> tuple[ReplayBuffer, dict]:
    """Collect ``n_episodes`` successful expert episodes; returns the buffer and a summary."""
    rng = np.random.default_rng(seed)
    env = PushTEnv(obs_type="state")
    expert = PushTExpert()
    buffer = ReplayBuffer.create_empty()
    attempts, start = 0, time.perf_counter()
    with tqdm(total=n_episodes, desc="pusht expert episodes", disable=not show_progress) as progress:
        while buffer.n_episodes < n_episodes:
            episode_seed = int(rng.integers(FIRST_EPISODE_SEED, 2**31 - 1))
            episode = run_expert_episode(env, expert, episode_seed, record=True, images=images, perturb=perturb)
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
    parser.add_argument("--perturb", type=float, default=0.0, metavar="PIXELS",
                        help="shove the agent off course now and then by offsets of this size "
                             "(actions stay the expert's)")
    args = parser.parse_args(argv)
    buffer, summary = generate(args.episodes, args.seed, images=args.images, perturb=args.perturb)
    path = buffer.save_to_path(args.out)
    print(
        f"wrote {path}: {summary['episodes']} episodes, {buffer.n_steps} steps "
        f"(kept {summary['episodes']}/{summary['attempts']} = {summary['success_share']:.3f} successful), "
        f"{summary['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
