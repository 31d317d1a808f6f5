"""Data formats of the policy branch: DP's zarr replay buffer, sequence sampling, robomimic hdf5.

Everything exported here is numpy/zarr/h5py only, so simulators (``envs``) can write datasets
without importing torch. The torch dataset lives in ``drifting_policy.data.dataset``.
"""
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.robomimic_hdf5 import RobomimicReader, write_robomimic_hdf5
from drifting_policy.data.rotation import axis_angle_action_to_rot6d, rot6d_action_to_axis_angle
from drifting_policy.data.sampler import SequenceSampler, downsample_mask, get_val_mask

__all__ = [
    "ReplayBuffer",
    "RobomimicReader",
    "SequenceSampler",
    "axis_angle_action_to_rot6d",
    "downsample_mask",
    "get_val_mask",
    "rot6d_action_to_axis_angle",
    "write_robomimic_hdf5",
]
