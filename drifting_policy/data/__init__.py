"""Data formats of the policy branch: DP's zarr replay buffer, sequence sampling, datasets, robomimic hdf5."""
from drifting_policy.data.replay_buffer import ReplayBuffer

__all__ = ["ReplayBuffer"]
