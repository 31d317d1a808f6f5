"""Generate BlockPush demonstrations with the scripted oracle, in Diffusion Policy's zarr layout.

    python -m envs.blockpush.generate --episodes 1000 --seed 0 --out data/blockpush.zarr.zip

Episode attempt i resets the env with seed `seed + i` and draws the oracle's plan from
`numpy.random.default_rng((seed, i))`, so a file is a function of (episodes, seed). Only episodes that
reach p2 (both blocks in different zones) are kept; attempts continue until `--episodes` are kept and the
kept share is printed. Each kept episode stores every observation the oracle acted on, the final one
included, as `obs` (T, 16) with its action `action` (T, 2), like DP's `multimodal_push_seed.zarr`.
"""

import argparse
import time

import numpy as np
from tqdm import tqdm

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.blockpush.env import BlockPushMultimodalEnv, phase_metrics
from envs.blockpush.oracle import MultimodalPushOracle


def run_oracle_episode(env, oracle, seed, attempt):
    """One oracle episode; returns obs (T, 16) float32, action (T, 2) float32, rewards, the plan and info."""
    oracle.reset(np.random.default_rng((seed, attempt)))
    obs, info = env.reset(seed=seed + attempt)
    observations, actions, rewards = [], [], []
    while True:
        action = oracle(obs)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    # DP's demonstrations end with the final observation and the oracle's answer to it.
    observations.append(obs)
    actions.append(oracle(obs))
    return {
        "obs": np.asarray(observations, dtype=np.float32),
        "action": np.asarray(actions, dtype=np.float32),
        "rewards": np.asarray(rewards),
        "plan": oracle.plan_index,
        "info": info,
    }


def generate(n_episodes, seed, max_attempts=None):
    """Returns (ReplayBuffer of n_episodes successful episodes, number of attempts used)."""
    max_attempts = max_attempts or 3 * n_episodes
    env = BlockPushMultimodalEnv()
    oracle = MultimodalPushOracle()
    buffer = ReplayBuffer.create_empty()
    attempt = 0
    with tqdm(total=n_episodes, desc="BlockPush oracle episodes") as progress:
        while buffer.n_episodes < n_episodes:
            if attempt >= max_attempts:
                raise RuntimeError(f"only {buffer.n_episodes} of {n_episodes} episodes succeeded in {attempt} attempts")
            episode = run_oracle_episode(env, oracle, seed, attempt)
            attempt += 1
            if phase_metrics(episode["rewards"])["p2"]:
                buffer.add_episode({"obs": episode["obs"], "action": episode["action"]})
                progress.update(1)
    env.close()
    return buffer, attempt


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="successful episodes to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output path, a .zarr directory or .zarr.zip")
    args = parser.parse_args()
    start = time.perf_counter()
    buffer, attempts = generate(args.episodes, args.seed)
    path = buffer.save_to_path(args.out)
    elapsed = time.perf_counter() - start
    print(f"kept {buffer.n_episodes}/{attempts} episodes ({buffer.n_episodes / attempts:.1%} reached p2), "
          f"{buffer.n_steps} steps, mean length {buffer.n_steps / buffer.n_episodes:.1f}; "
          f"{elapsed:.0f} s ({elapsed / attempts:.2f} s per episode); wrote {path}")


if __name__ == "__main__":
    main()
