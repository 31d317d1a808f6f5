"""A run folder is the run (issue 23): a copied, moved or relatively recorded run resumes where it is named; a folder
holding another run, a run without a readable checkpoint or other files is refused without a byte written; a
second training in a folder is stopped by its lock."""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drifting.checkpoint import load as load_checkpoint
from drifting.json_log import read_json_log
from drifting_policy import cli, config
from drifting_policy.errors import RunFolderError
from drifting_policy.run_folder import LOCK_NAME
from test_policy_training import FAST, config_dir, train, zarr_path  # noqa: F401  (fixtures)

COMMON = ["training.num_epochs=2", "training.max_train_steps=2", "training.rollout_every=1", "logging.plots=false"]


@pytest.fixture(scope="module")
def finished_run(config_dir, zarr_path, tmp_path_factory) -> Path:  # noqa: F811
    """Two epochs of the tiny task; tests work on copies."""
    run_dir = tmp_path_factory.mktemp("runs") / "orig"
    train(config_dir, zarr_path, run_dir, *COMMON)
    return run_dir


@pytest.fixture
def use_tiny_configs(config_dir, monkeypatch):  # noqa: F811
    monkeypatch.setattr(config, "CONFIG_DIR", config_dir)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with a hash of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def record_run_dir(run_dir: Path, recorded: str) -> None:
    """Write ``recorded`` as the saved config's run_dir, as runs saved before issue 23 hold their folder's path."""
    path = run_dir / ".hydra" / "config.yaml"
    saved = OmegaConf.load(path)
    saved.run_dir = recorded
    OmegaConf.save(saved, path)


def epoch_of(run_dir: Path) -> int:
    return load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["epoch"]


def cli_error(capsys, *argv) -> str:
    """Run the CLI expecting a reported error; returns its stderr (one error line and a hint)."""
    with pytest.raises(SystemExit) as stop:
        cli.main(list(argv))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------- resuming
def test_resuming_a_copy_trains_the_copy_and_leaves_the_original(finished_run, tmp_path, use_tiny_configs):
    copy = tmp_path / "backup_copy"
    shutil.copytree(finished_run, copy)
    record_run_dir(copy, str(finished_run))
    before = snapshot(finished_run)
    cli.main(["train", f"run_dir={copy}", "training.num_epochs=3"])
    assert snapshot(finished_run) == before
    assert epoch_of(copy) == 3
    assert OmegaConf.load(copy / ".hydra" / "config.yaml").run_dir == "."  # the folder itself, wherever it is


def test_a_moved_run_resumes_where_it_now_is(finished_run, tmp_path, use_tiny_configs):
    old_place, new_place = tmp_path / "old_place", tmp_path / "elsewhere" / "run"
    shutil.copytree(finished_run, old_place)
    record_run_dir(old_place, str(old_place))
    new_place.parent.mkdir()
    old_place.rename(new_place)
    cli.main(["train", f"run_dir={new_place}", "training.num_epochs=3"])
    assert not old_place.exists()
    assert epoch_of(new_place) == 3
    assert [r["epoch"] for r in read_json_log(new_place / "logs.json.txt") if "test/mean_score" in r] == [0, 1, 2]


def test_a_relative_run_dir_resumes_from_another_working_directory(finished_run, tmp_path, monkeypatch, capsys,
                                                                   use_tiny_configs):
    """The README's run records run_dir: outputs/pusht_drifting; resumed from elsewhere it must not start afresh."""
    run = tmp_path / "repo" / "outputs" / "pusht_drifting"
    shutil.copytree(finished_run, run)
    record_run_dir(run, "outputs/pusht_drifting")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli.main(["train", f"run_dir={run}", "training.num_epochs=3"])
    assert "Resumed from" in capsys.readouterr().out
    assert epoch_of(run) == 3
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------------------------------------- refusing
def test_another_policy_in_a_run_folder_is_refused_and_nothing_is_written(finished_run, zarr_path, tmp_path,  # noqa: F811
                                                                          capsys, use_tiny_configs):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    err = cli_error(capsys, "train", "task=tiny", "method=drifting_tiny", "network=unet_tiny",
                    f"task.zarr_path={zarr_path}", f"run_dir={run}", *FAST)
    assert (f"{run} holds a different run: policy._target_ is 'test_policy_training.TinyPolicy' there, "
            "'drifting_policy.policies.DriftingPolicy' here") in err
    assert "overwrite=true" in err
    # another network of the same policy is another run too
    err = cli_error(capsys, "train", "task=tiny", "method=tiny_mlp", "network=none", f"task.zarr_path={zarr_path}",
                    f"run_dir={run}", "+policy.hidden=64", *FAST)
    assert "holds a different run: policy.hidden is '<unset>' there, 64 here" in err
    assert snapshot(run) == before


def test_a_run_without_a_readable_checkpoint_is_refused_not_restarted(finished_run, tmp_path, capsys,
                                                                      use_tiny_configs):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.unlink()
    before, logged = snapshot(run), read_json_log(run / "logs.json.txt")
    err = cli_error(capsys, "train", f"run_dir={run}")
    assert f"{run} holds a run but no readable checkpoint: {run}/checkpoints/latest.ckpt is missing" in err
    assert snapshot(run) == before

    cli.main(["train", f"run_dir={run}", "overwrite=true"])  # meant: the run starts afresh
    assert read_json_log(run / "logs.json.txt") == logged and epoch_of(run) == 2  # the same run, repeated
    assert OmegaConf.load(run / ".hydra" / "config.yaml").overwrite is False  # a later resume never overwrites


def test_a_folder_of_other_files_is_refused(config_dir, zarr_path, tmp_path):  # noqa: F811
    folder = tmp_path / "my_stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"my_stuff is not empty and holds no run \(notes.txt\)"):
        train(config_dir, zarr_path, folder, *COMMON)
    with pytest.raises(RunFolderError, match="holds no run"):
        train(config_dir, zarr_path, folder, *COMMON, "overwrite=true")  # overwrite deletes runs, not other files
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_second_training_in_a_folder_is_stopped_by_the_lock(finished_run, config_dir, zarr_path, tmp_path,  # noqa: F811
                                                              capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_NAME).write_text(f'{{"pid": {holder.pid}, "host": "{socket.gethostname()}"}}')
        before = snapshot(run)
        with pytest.raises(RunFolderError, match=rf"is being trained by process {holder.pid} \(lock file "):
            train(config_dir, zarr_path, run, *COMMON, "training.num_epochs=3")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over
    train(config_dir, zarr_path, run, *COMMON, "training.num_epochs=3")
    assert "was left by a process that is gone" in capsys.readouterr().out
    assert epoch_of(run) == 3 and not (run / LOCK_NAME).exists()


def test_a_refused_start_leaves_no_folder(config_dir, tmp_path, capsys, use_tiny_configs):  # noqa: F811
    """Data errors surface after the lock is taken: the folder the lock created goes with it."""
    garbage = tmp_path / "garbage.zarr.zip"
    garbage.write_bytes(b"not a zip")
    run = tmp_path / "new_run"
    err = cli_error(capsys, "train", "task=tiny", "method=tiny_mlp", "network=none", f"task.zarr_path={garbage}",
                    f"run_dir={run}", *FAST)
    assert f"{garbage}: not a readable replay buffer (BadZipFile" in err
    assert not run.exists()
