"""robomimic demonstrations as Diffusion Policy's training data: the factory task configs name as
``task.dataset.data`` (``SequenceDataset(data=...)``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.robomimic_hdf5 import RobomimicReader


def load_replay_buffer(path: str | Path, obs_keys: Sequence[str], abs_action: bool = False,
                       filter_key: str | None = None) -> ReplayBuffer:
    """A robomimic hdf5 file as a replay buffer (for ``SequenceDataset(data=...)`` in task configs)."""
    return RobomimicReader(path).to_replay_buffer(list(obs_keys), abs_action=abs_action, filter_key=filter_key)
