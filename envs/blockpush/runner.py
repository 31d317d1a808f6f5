"""BlockPush's part of a policy evaluation with `envs.common.runner.VectorEnvRunner`.

The generic runner needs an env factory and, per episode, initial conditions; this module supplies DP's
"train" initial states (the scenes of seeds 0.., which are also the first demonstrations' scenes) and the
reduction of each episode's final `info` to DP's BlockPush metrics plus the multimodality measures:
`{prefix}/p1`, `{prefix}/p2`, `{prefix}/mean_score` (DP's summed distinct rewards), the share of each
final zone assignment and of each first-entering block, the normalized entropy of the assignment among
p2 episodes (1 = both assignments equally often) and DP's event shares `{prefix}/REACH_i`,
`{prefix}/TARGET_i_j` (block i moved / block i entered zone j).
"""

import collections

import numpy as np

from envs.blockpush.env import BlockPushMultimodalEnv
from envs.common.runner import seeded_initial_states


def make_env():
    """Env factory for vector envs (a module-level function, so it pickles for AsyncVectorEnv)."""
    return BlockPushMultimodalEnv()


def train_initial_states(n_train=6, start_seed=0):
    """`get_state()` vectors of the scenes that seeds start_seed.. produce (DP evaluates "train" on seeds 0..5)."""
    return seeded_initial_states(BlockPushMultimodalEnv, n_train, start_seed)


def summarize(prefixes, final_infos):
    """DP's BlockPush log entries from each episode's prefix ("train"/"test") and final env `info`."""
    if len(prefixes) != len(final_infos):
        raise ValueError(f"summarize: {len(prefixes)} prefixes for {len(final_infos)} episode infos")
    groups = collections.defaultdict(list)
    for prefix, info in zip(prefixes, final_infos, strict=True):
        groups[prefix].append(info)
    log = {}
    for prefix, infos in groups.items():
        log[f"{prefix}/mean_score"] = float(np.mean([info["score"] for info in infos]))
        log[f"{prefix}/p1"] = float(np.mean([info["p1"] for info in infos]))
        log[f"{prefix}/p2"] = float(np.mean([info["p2"] for info in infos]))
        assignments = np.array([info["assignment"] for info in infos])
        first_blocks = np.array([info["first_block"] for info in infos])
        for k in (0, 1):
            log[f"{prefix}/assignment_{k}"] = float(np.mean(assignments == k))
            log[f"{prefix}/first_block_{k}"] = float(np.mean(first_blocks == k))
        log[f"{prefix}/assignment_entropy"] = _binary_entropy(assignments[assignments >= 0])
        for i in range(2):
            log[f"{prefix}/REACH_{i}"] = float(np.mean([info["block_moved_step"][i] >= 0 for info in infos]))
            for j in range(2):
                entered = [info["block_entered_step"][i, j] >= 0 for info in infos]
                log[f"{prefix}/TARGET_{i}_{j}"] = float(np.mean(entered))
    return log


def _binary_entropy(labels):
    """Entropy in bits of a 0/1 label sample (0 for an empty sample)."""
    if len(labels) == 0:
        return 0.0
    share = float(np.mean(labels == 1))
    return float(sum(-p * np.log2(p) for p in (share, 1.0 - share) if p > 0))  # sum starts at 0: no "-0.0"
