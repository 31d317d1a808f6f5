"""Logs and checkpoints that survive damage (issue 23): a corrupt log line is named and skipped, never the cause of
lost lines; a damaged or missing latest.ckpt falls back to the newest readable top-k checkpoint; temporary files of
killed writers are removed; a kill between latest.ckpt and the top-k checkpoint loses no top-k checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drifting.checkpoint import atomic_save
from drifting.checkpoint import load as load_checkpoint
from drifting.json_log import read_json_log
from drifting_policy.checkpoint import TopKCheckpoints
from drifting_policy.errors import RunFolderError
from drifting_policy.report import main as report_main
from test_policy_training import config_dir, train, write_log, zarr_path  # noqa: F401  (fixtures)

# Three scored epochs of two batches each: 6 log lines, top-k checkpoints of epochs 0, 1 and 2.
COMMON = ["training.num_epochs=3", "training.max_train_steps=2", "training.rollout_every=1", "logging.plots=false"]


@pytest.fixture(scope="module")
def finished_run(config_dir, zarr_path, tmp_path_factory) -> Path:  # noqa: F811
    run_dir = tmp_path_factory.mktemp("runs") / "orig"
    train(config_dir, zarr_path, run_dir, *COMMON)
    return run_dir


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def damage_line(path: Path, number: int) -> bytes:
    """Garble line ``number`` (1-based) in place; returns the garbled line."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1][:10] + b"\xff\x00garbage\n"
    path.write_bytes(b"".join(lines))
    return lines[number - 1]


# ---------------------------------------------------------------------------------------------- the log
def test_report_names_a_corrupt_line_and_keeps_the_lines_after_it(tmp_path, capsys):
    scores = [0.1, 0.2, 0.3, 0.9, 0.4]
    write_log(tmp_path / "run", "pusht", "drifting", scores)
    damage_line(tmp_path / "run" / "logs.json.txt", 3)  # epoch 1's first line
    [row] = report_main([str(tmp_path / "run")])
    assert row["max_mean"] == pytest.approx(0.9) and row["evaluations"] == 5
    assert f"{tmp_path / 'run' / 'logs.json.txt'}:3: not a JSON object; skipped" in capsys.readouterr().err


def test_resume_keeps_every_line_around_a_corrupt_one(config_dir, zarr_path, run, capsys):  # noqa: F811
    log = run / "logs.json.txt"
    before = log.read_bytes().splitlines(keepends=True)
    bad = damage_line(log, 2)
    train(config_dir, zarr_path, run, *COMMON, "training.num_epochs=4")
    after = log.read_bytes().splitlines(keepends=True)
    assert after[:6] == [before[0], bad, *before[2:]]  # every earlier line in place, the damaged one as it was
    assert [json.loads(line)["global_step"] for line in after[6:]] == [6, 7]
    assert f"{log}:2: not a JSON object; skipped" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_readable_topk(config_dir, zarr_path, run, capsys):  # noqa: F811
    latest = run / "checkpoints" / "latest.ckpt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    newest = TopKCheckpoints(run / "checkpoints").by_epoch()[0]
    newest.write_bytes(b"garbage")
    train(config_dir, zarr_path, run, *COMMON)
    err = capsys.readouterr().err
    assert f"{latest}: not a readable checkpoint (" in err
    assert f"{newest}: not a readable checkpoint (" in err
    assert "; resuming from " in err and "epoch=0001-" in err and "(epoch 2)" in err
    records = read_json_log(run / "logs.json.txt")
    assert [r["global_step"] for r in records] == list(range(6))  # epoch 2 ran again and was logged once
    assert load_checkpoint(latest)["epoch"] == 3


def test_a_run_whose_checkpoints_are_all_damaged_is_refused(config_dir, zarr_path, run):  # noqa: F811
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.write_bytes(b"")
    with pytest.raises(RunFolderError, match=r"holds a run but no readable checkpoint: .*latest.ckpt: not a "
                                             r"readable checkpoint"):
        train(config_dir, zarr_path, run, *COMMON)


def test_non_finite_weights_in_a_checkpoint_count_as_damage(config_dir, zarr_path, run, capsys):  # noqa: F811
    latest = run / "checkpoints" / "latest.ckpt"
    state = load_checkpoint(latest)
    next(iter(state["ema"]["model"].values())).view(-1)[0] = float("nan")
    torch.save(state, latest)
    train(config_dir, zarr_path, run, *COMMON)
    assert "latest.ckpt (EMA): weights 'net.0.weight' hold 1 non-finite value(s)" in capsys.readouterr().err


def test_temporary_files_of_killed_writers_are_removed(config_dir, zarr_path, run, capsys):  # noqa: F811
    dead = dead_pid()  # the names drifting.files.atomic_path gives, of writers killed before their rename
    orphans = [run / "checkpoints" / f".latest.tmp{dead}.ckpt",
               run / "checkpoints" / f".epoch=0002-test_mean_score=0.500.tmp{dead}.ckpt",
               run / f".run_info.tmp{dead}.json", run / ".hydra" / f".config.tmp{dead}.yaml"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    (run / "pretrained" / f".last.tmp{dead}").mkdir()
    train(config_dir, zarr_path, run, *COMMON)
    assert not any(orphan.exists() for orphan in orphans) and not (run / "pretrained" / f".last.tmp{dead}").exists()
    assert "removed 5 temporary file(s) a killed run left" in capsys.readouterr().out


def test_atomic_save_removes_its_dead_writers_temp_files(tmp_path):
    orphan, live = tmp_path / f".state.tmp{dead_pid()}.pt", tmp_path / f".state.tmp{os.getppid()}.pt"
    orphan.write_bytes(b"half")
    live.write_bytes(b"being written")
    atomic_save({"x": 1}, tmp_path / "state.pt")
    assert not orphan.exists() and live.exists()


def test_a_kill_between_latest_and_topk_loses_no_topk_checkpoint(config_dir, zarr_path, tmp_path, monkeypatch):  # noqa: F811
    straight = tmp_path / "straight"
    train(config_dir, zarr_path, straight, *COMMON)

    real_replace, writes = os.replace, []

    def dies_after_second_latest(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "latest.ckpt":
            writes.append(dst)
            if len(writes) == 2:  # epoch 1's save: latest.ckpt is in place, then the process dies
                raise KeyboardInterrupt("killed")

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(os, "replace", dies_after_second_latest)
    with pytest.raises(KeyboardInterrupt):
        train(config_dir, zarr_path, interrupted, *COMMON)
    monkeypatch.setattr(os, "replace", real_replace)
    train(config_dir, zarr_path, interrupted, *COMMON)
    names = {run: sorted(path.name for path in TopKCheckpoints(run / "checkpoints").scores())
             for run in (straight, interrupted)}
    assert len(names[straight]) == 3 and names[interrupted] == names[straight]
