"""Kill and resume (issue 23, slow): a short run of the real drifting policy, killed with SIGKILL at random moments
several times and resumed each time, ends bit for bit where an uninterrupted run ends: the log, the checkpoint's
weights, EMA and optimizer, the top-k checkpoints and the exported policy. A second training started in the folder
while one runs is refused by the lock. And, deterministically: a run stopped right after each of its file writes
(every atomic rename) in turn resumes to the same end."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from drifting.checkpoint import load as load_checkpoint
from drifting_policy.checkpoint import TopKCheckpoints
from drifting_policy.run_folder import LOCK_NAME
from test_policy_training import FAST, config_dir, train, zarr_path  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent
RUN = ["training.num_epochs=8", "training.max_train_steps=3", "training.rollout_every=1",
       "training.checkpoint_every=1", "checkpoint.topk=3", "logging.plots=false"]
KILLS = 6


def command(config_dir: Path, zarr_path: Path, run_dir: Path) -> tuple[list[str], dict]:  # noqa: F811
    argv = [sys.executable, "-m", "drifting_policy.cli", "train", "task=tiny", "method=drifting_tiny",
            "network=unet_tiny", f"task.zarr_path={zarr_path}", f"run_dir={run_dir}", *FAST, *RUN]
    env = {**os.environ, "DRIFTING_POLICY_CONFIG_DIR": str(config_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return argv, env


def run_to_end(argv: list[str], env: dict) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def wait_for_lock(run_dir: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``process`` holds the run's lock (past its imports and checks; a killed run's stale lock does not
    count)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads((run_dir / LOCK_NAME).read_text())["pid"] == process.pid:
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the run never took its lock"
        time.sleep(0.02)


def assert_same_run(a: Path, b: Path) -> None:
    """``b`` ended where ``a`` did, bit for bit, and left no temporary file or lock."""
    assert (a / "logs.json.txt").read_bytes() == (b / "logs.json.txt").read_bytes()
    states = [load_checkpoint(run / "checkpoints" / "latest.ckpt") for run in (a, b)]
    assert states[0]["epoch"] == states[1]["epoch"]
    for part in ("policy", "ema", "optimizer"):
        flat = [torch.nn.utils.parameters_to_vector(list(_tensors(state[part]))) for state in states]
        assert torch.equal(flat[0], flat[1]), part
    topk = [sorted(path.name for path in TopKCheckpoints(run / "checkpoints").scores()) for run in (a, b)]
    assert topk[0] and topk[0] == topk[1]
    exported = [load_file(run / "pretrained" / "last" / "model.safetensors") for run in (a, b)]
    assert list(exported[0]) == list(exported[1])
    for name, value in exported[0].items():
        assert torch.equal(value, exported[1][name]), f"pretrained/last: {name}"
    leftovers = [path for path in b.rglob("*") if ".tmp" in path.name or path.name == LOCK_NAME]
    assert leftovers == []


def _tensors(node):
    """Every floating-point tensor of a (nested) state dict, in a fixed order."""
    if torch.is_tensor(node):
        return [node.float().flatten()] if node.is_floating_point() else []
    if isinstance(node, dict):
        return [t for key in sorted(node, key=str) for t in _tensors(node[key])]
    if isinstance(node, (list, tuple)):
        return [t for item in node for t in _tensors(item)]
    return []


def logged_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "logs.json.txt").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_runs_killed_at_random_moments_resume_bit_for_bit(config_dir, zarr_path, tmp_path):  # noqa: F811
    straight = tmp_path / "straight"
    argv, env = command(config_dir, zarr_path, straight)
    run_to_end(argv, env)
    total_lines = logged_lines(straight)  # one per training step

    # Each run is killed a random moment (0 to 0.5 s) after its log reached a random length: in a step, a
    # rollout, a checkpoint or an export. The lengths increase, and a resumed run repeats at most an epoch.
    killed = tmp_path / "killed"
    argv, env = command(config_dir, zarr_path, killed)
    moments = random.Random(0)
    kills = []
    for target in sorted(moments.sample(range(1, total_lines), KILLS)):
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_lock(killed, process)
        while logged_lines(killed) < target and process.poll() is None:
            time.sleep(0.01)
        time.sleep(moments.uniform(0.0, 0.5))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read()[-2000:]
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append(logged_lines(killed))
    print(f"{total_lines} steps; killed {len(kills)} times, with {kills} lines logged")
    assert len(kills) >= 3

    # While one training holds the folder (held still meanwhile), a second one is refused; then the first is killed.
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lock(killed, process)
    process.send_signal(signal.SIGSTOP)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert second.returncode == 2 and f"is being trained by process {process.pid}" in second.stderr

    run_to_end(argv, env)
    assert load_checkpoint(killed / "checkpoints" / "latest.ckpt")["epoch"] == 8
    assert_same_run(straight, killed)


class Stopped(BaseException):
    """A stop no handler catches (``finally`` blocks still run, unlike after SIGKILL: the lock is released)."""


def stop_after_write(point: int, real_replace):
    """``os.replace`` that raises Stopped once the write numbered ``point`` (from 0) has happened."""
    writes = []

    def replace_then_stop(src, dst):
        real_replace(src, dst)
        writes.append(dst)
        if len(writes) == point + 1:
            raise Stopped(dst)

    return replace_then_stop


SWEEP = ["training.num_epochs=3", "training.max_train_steps=2", "training.rollout_every=1", "checkpoint.topk=2",
         "logging.plots=false"]


def test_a_run_stopped_after_any_file_write_resumes_to_the_same_end(config_dir, zarr_path, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    straight = tmp_path / "straight"
    train(config_dir, zarr_path, straight, *SWEEP, policy="drifting_tiny")
    real_replace = os.replace
    for point in range(200):
        run_dir = tmp_path / f"stopped_after_write_{point}"
        monkeypatch.setattr(os, "replace", stop_after_write(point, real_replace))
        try:
            train(config_dir, zarr_path, run_dir, *SWEEP, policy="drifting_tiny")
            break  # the run has fewer writes than this: every one was a stopping point
        except Stopped:
            pass
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
        train(config_dir, zarr_path, run_dir, *SWEEP, policy="drifting_tiny")
        assert_same_run(straight, run_dir)
    assert point > 20  # config, run info, exports, top-k and latest checkpoints of three epochs
