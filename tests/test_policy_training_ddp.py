"""Data-parallel training on CPU (gloo, 2 processes) follows the single-process run with the same global batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch.multiprocessing as mp

from drifting.json_log import read_json_log
from drifting_policy.workspace import TrainWorkspace
from test_policy_training import config_dir, make_cfg, train, zarr_path  # noqa: F401  (fixtures)

# Both runs drop the last partial batch: then each global batch is the same set of windows in both runs
# (rank r takes every other window of the epoch's permutation).
COMMON = ["training.num_epochs=3", "training.rollout_every=1", "+dataloader.drop_last=true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, configs, data, run_dir) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    cfg = make_cfg(configs, data, run_dir, *COMMON)
    TrainWorkspace(cfg, run_dir).run()


@pytest.mark.slow
def test_two_process_run_matches_single_process(config_dir, zarr_path, tmp_path):  # noqa: F811
    single = train(config_dir, zarr_path, tmp_path / "single", *COMMON)
    port = free_port()
    mp.spawn(ddp_worker, args=(2, port, config_dir, zarr_path, tmp_path / "ddp"), nprocs=2, join=True)
    ddp = read_json_log(tmp_path / "ddp" / "logs.json.txt")

    assert [r["global_step"] for r in ddp] == [r["global_step"] for r in single]
    for a, b in zip(single, ddp, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-7)
        for key in ("val_loss", "test/mean_score"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7)
    assert (tmp_path / "ddp" / "checkpoints" / "latest.ckpt").exists()
