"""What a training run needs besides its model, shared by both branches: the device and the processes (torchrun),
seeding, and the run's log (``logs.json.txt`` plus wandb, offline unless asked).

Run folders live under ``outputs/`` (``outputs/<date>/<time>_<policy>_<task>`` for policies, ``outputs/image/<name>``
for the image configs); a run is resumed from its folder.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from drifting.json_log import JsonLogger, numeric_items, to_numbers

WANDB_MODES = ("offline", "online", "disabled")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto': cuda if available, else cpu; anything else as torch.device takes it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Torch's global random state seeded with ``seed`` inside and restored after, on the CPU and every CUDA device
    (``manual_seed`` seeds them all): sampling in here (rollouts, evaluation) repeats for the same seed and leaves
    the training stream as it was."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Distributed:
    """Rank, world size and device from torchrun's environment variables (one process, rank 0, without them).

    Under torchrun with a CUDA device each rank takes ``cuda:LOCAL_RANK``; the process group is NCCL on GPUs and
    gloo on CPUs. ``timeout_min`` bounds how long a rank waits at a collective: the main process evaluates (policy
    rollouts, image samples) while the others wait, so it must outlast that."""

    def __init__(self, device_name: str = "auto", timeout_min: float = 120.0):
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = resolve_device(device_name)
        if self.world_size > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=timeout_min))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


class RunLog:
    """The main process's log of a run: ``<run>/logs.json.txt`` (every logged key; see ``drifting.json_log``) and,
    unless ``wandb_mode`` is 'disabled', a wandb run under ``<run>/wandb`` (offline by default: nothing leaves the
    machine unless 'online' is asked). ``resume_step`` drops the lines of steps a resumed run takes again.
    ``wandb_options`` go to ``wandb.init`` (project, name, group, tags, id, config). Close it (or use ``with``):
    that finishes the wandb run."""

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None, wandb_mode: str = "offline",
                 **wandb_options):
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}; got {wandb_mode!r}")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.json = JsonLogger(run_dir / "logs.json.txt", resume_step=resume_step)
        self.wandb = None
        if wandb_mode != "disabled":
            import wandb  # lazily: a missing or broken wandb is fine when it is disabled

            self.wandb = wandb.init(dir=str(run_dir), mode=wandb_mode, resume="allow", **wandb_options)

    def log(self, record: dict, step: int) -> dict:
        """Log the numbers of ``record`` (tensors become numbers here, in one transfer) as ``global_step`` = step;
        returns what was logged."""
        numbers = to_numbers({"global_step": step, **numeric_items(record)})
        self.json.log(numbers)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)
        return numbers

    def close(self) -> None:
        self.json.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
