"""A run folder is the run: what is in it decides whether training may start there, and from which checkpoint.

* An empty or new folder starts a run.
* A folder holding this run (same task, policy and network as the config) resumes from its newest readable
  checkpoint: ``checkpoints/latest.ckpt``, else the top-k checkpoints, newest epoch first, with a warning naming each
  damaged file. A run that never saved a checkpoint (killed in its first epoch) starts again.
* A folder holding another run, a run whose checkpoints are all unreadable, or files that are not a run is refused
  with one line; ``overwrite=true`` deletes the run (never other files) and starts afresh.
* ``train.lock`` holds the training process's id and host: a second training in the folder is refused while that
  process lives; a lock left by a killed process is taken over.

Everything here reads the folder; only ``RunLock`` and ``remove_run`` write.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from drifting.checkpoint import CheckpointError, check_finite_weights, load
from drifting.files import TEMP_NAME, process_alive, remove_path
from drifting_policy.checkpoint import TopKCheckpoints
from drifting_policy.errors import RunFolderError

LOCK_NAME = "train.lock"
CONFIG_PATH = Path(".hydra") / "config.yaml"
# Everything a training run (and `eval` of it) writes in its folder, besides the temporary names of its atomic
# writes (drifting.files.TEMP_NAME); overwrite=true deletes these and nothing else.
RUN_ENTRIES = (".hydra", "checkpoints", "pretrained", "logs.json.txt", "run_info.json", "plots", "media", "eval",
               "wandb")
CHECKPOINT_KEYS = ("cfg", "policy", "ema", "optimizer", "lr_scheduler", "epoch", "global_step", "best_score", "rng")
OVERWRITE_HINT = "choose another folder with run_dir=<new folder>, or add overwrite=true to delete that run"


# ---------------------------------------------------------------------------------------------- the lock
class RunLock:
    """``<run>/train.lock``, created exclusively, holding ``{"pid", "host", "since"}``. ``release`` deletes it, and
    the folder too when the lock created it and nothing else was written (a refused start leaves no trace)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created_folder = False
        self.held = False

    def acquire(self) -> RunLock:
        self.created_folder = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                with open(self.path, "x") as f:
                    json.dump(owner, f)
                self.held = True
                return self
            except FileExistsError:
                self._remove_if_stale()
        raise RunFolderError(f"{self.run_dir}: could not take {self.path}")

    def _remove_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile
        except (ValueError, KeyError, TypeError):
            pid, host = None, None  # torn by a kill while it was written: nobody holds it
        if pid is not None and (host != socket.gethostname() or process_alive(pid)):
            where = "" if host == socket.gethostname() else f" on {host}"
            raise RunFolderError(f"{self.run_dir} is being trained by process {pid}{where} (lock file {self.path})",
                                 hint=f"wait for that training to end, or delete {self.path} if it is gone")
        print(f"warning: {self.path} was left by a process that is gone ({pid}); taking it over", flush=True)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.path.unlink(missing_ok=True)
        self.held = False
        if self.created_folder and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------- what a folder holds
def stored_config(cfg: DictConfig) -> DictConfig:
    """The config as a run folder keeps it: ``run_dir`` is the folder itself ('.'), whatever it was started as,
    and ``overwrite`` is off, so that resuming the run never deletes it."""
    stored = cfg.copy()
    stored.run_dir = "."
    stored.overwrite = False
    return stored


def flat_items(node, prefix: str) -> dict[str, object]:
    if isinstance(node, dict):
        items = {}
        for key, value in node.items():
            items.update(flat_items(value, f"{prefix}.{key}"))
        return items
    return {prefix: node}


def run_identity(cfg: DictConfig) -> dict[str, object]:
    """What makes two configs the same run: the task's name and the policy node (class, network and method
    settings), resolved, as dotted keys."""
    return {"task.name": cfg.task.name,
            **flat_items(OmegaConf.to_container(cfg.policy, resolve=True), "policy")}


def identity_difference(theirs: dict, ours: dict) -> str | None:
    """The first key on which two identities differ, said as 'key is X there, Y here'."""
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key, "<unset>") != ours.get(key, "<unset>"):
            return f"{key} is {theirs.get(key, '<unset>')!r} there, {ours.get(key, '<unset>')!r} here"
    return None


def is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or bool(TEMP_NAME.fullmatch(name))


def folder_entries(run_dir: Path) -> list[str]:
    return sorted(path.name for path in run_dir.iterdir() if path.name != LOCK_NAME) if run_dir.is_dir() else []


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """latest.ckpt, then the top-k checkpoints, newest epoch first."""
    latest = run_dir / "checkpoints" / "latest.ckpt"
    return ([latest] if latest.exists() else []) + TopKCheckpoints(run_dir / "checkpoints").by_epoch()


def load_training_state(path: Path) -> dict:
    """A checkpoint that can resume a run: readable, complete and with finite weights (else CheckpointError)."""
    state = load(path)
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (lacks {', '.join(missing)})")
    check_finite_weights(state["policy"], f"{path} (policy)")
    if state["ema"] is not None:
        check_finite_weights(state["ema"]["model"], f"{path} (EMA)")
    return state


def remove_run(run_dir: Path) -> None:
    """Delete what a run wrote in ``run_dir`` (``overwrite=true``); other files stay."""
    for path in list(run_dir.iterdir()):
        if is_run_entry(path.name):
            remove_path(path)


# ---------------------------------------------------------------------------------------------- the decision
@dataclass
class StartPlan:
    """How a training starts in its folder."""

    resume_from: Path | None = None  # the checkpoint to resume from; None: epoch 0
    state: dict | None = None  # its contents
    remove_old_run: bool = False  # overwrite=true on a folder holding a run
    warnings: list[str] = field(default_factory=list)


def plan_start(run_dir: Path, cfg: DictConfig) -> StartPlan:
    """Decide, reading only, how training with ``cfg`` may start in ``run_dir``; RunFolderError when it may not."""
    from drifting_policy.config import load_config

    entries = folder_entries(run_dir)
    if not entries:
        return StartPlan()
    if not (run_dir / CONFIG_PATH).is_file():
        foreign = [name for name in entries if not is_run_entry(name)]
        if cfg.overwrite and not foreign:
            return StartPlan(remove_old_run=True)
        raise RunFolderError(f"{run_dir} is not empty and holds no run ({', '.join(entries[:5])}"
                             f"{', ...' if len(entries) > 5 else ''})",
                             hint="choose a new or empty folder with run_dir=<folder>")
    if cfg.overwrite:
        return StartPlan(remove_old_run=True, warnings=[f"overwrite=true: deleting the run in {run_dir}"])
    try:
        theirs = run_identity(load_config(run_dir / CONFIG_PATH))
    except OmegaConfBaseException as error:
        raise RunFolderError(f"{run_dir / CONFIG_PATH}: the run's config does not resolve "
                             f"({str(error).splitlines()[0]})", hint=OVERWRITE_HINT) from error
    difference = identity_difference(theirs, run_identity(cfg))
    if difference is not None:
        raise RunFolderError(f"{run_dir} holds a different run: {difference}", hint=OVERWRITE_HINT)
    if not cfg.training.resume:
        raise RunFolderError(f"{run_dir} already holds a run and training.resume=false", hint=OVERWRITE_HINT)
    return plan_resume(run_dir)


def plan_resume(run_dir: Path) -> StartPlan:
    """Resume from the newest readable checkpoint; refuse a run that saved something but has no readable
    checkpoint (restarting it would replace its log and exports)."""
    latest = run_dir / "checkpoints" / "latest.ckpt"
    problems = [] if latest.exists() else [f"{latest} is missing"]
    candidates = checkpoint_candidates(run_dir)
    for path in candidates:
        try:
            state = load_training_state(path)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        warnings = [f"{'; '.join(problems)}; resuming from {path} (epoch {state['epoch']})"] if problems else []
        return StartPlan(resume_from=path, state=state, warnings=warnings)
    if candidates or (run_dir / "pretrained" / "last").exists():  # exported only after a checkpoint was written
        raise RunFolderError(f"{run_dir} holds a run but no readable checkpoint: {'; '.join(problems)}",
                             hint=OVERWRITE_HINT)
    return StartPlan(warnings=[f"{run_dir} holds a run killed before its first checkpoint: starting it again"])
