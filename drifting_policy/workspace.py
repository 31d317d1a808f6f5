"""Training a policy on a task: Diffusion Policy's training workspace, written as one visible loop.

Per epoch: every batch of the task's ``SequenceDataset`` goes through ``loss = policy.compute_loss(batch)``,
backward, an AdamW step, a per-batch cosine learning-rate step and an EMA update. At the end of the epoch the
EMA policy is rolled out by the task's env runner (every ``rollout_every`` epochs), the validation loss is
measured (every ``val_every``), a line goes to ``logs.json.txt`` and the checkpoints are written.

Exact resume: ``latest.ckpt`` is written at epoch boundaries and holds the policy, EMA, optimizer, scheduler,
counters and every rank's RNG states; the data order of an epoch depends only on ``(training.seed, epoch)``, so
a resumed run repeats an uninterrupted one step for step. The run folder is the run: ``run_folder.plan_start``
decides (reading only) whether training may start in it and from which checkpoint, and nothing is written there
before that, the config checks, the data checks and the lock (``train.lock``) have passed. Rollouts sample
under ``training.rollout_seed``, in a forked random state, so their scores repeat and the training stream is the
same with or without them.

Several GPUs: run the same command under ``torchrun --nproc_per_node=N``. ``dataloader.batch_size`` is the
global batch, split evenly over the ranks; gradients are averaged by DistributedDataParallel; only rank 0
evaluates, logs and writes files.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from drifting import EMA
from drifting.checkpoint import CheckpointError, atomic_save, first_non_finite, rng_state, set_rng_state
from drifting.files import atomic_copy, atomic_write_text
from drifting.json_log import bad_line_message
from drifting.runs import Distributed, RunLog, seed_everything, seeded_rng
from drifting_policy.checkpoint import TopKCheckpoints, atomic_save_pretrained, remove_temp_files
from drifting_policy.config import check_train_config, first_line, instantiate, save_config
from drifting_policy.errors import RunFolderError
from drifting_policy.plots import plot_training_curves
from drifting_policy.report import load_run
from drifting_policy.run_folder import RunLock, StartPlan, plan_start, remove_run, stored_config


class NonFiniteLossError(FloatingPointError):
    pass


# ---------------------------------------------------------------------------------------------- small helpers
def to_device(batch, device: torch.device):
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch.to(device, non_blocking=True)


def batch_statistics(batch, prefix: str = "") -> list[str]:
    """One line per tensor: shape, min / max / mean of its finite values and how many are NaN or inf."""
    if isinstance(batch, dict):
        return [line for key, value in batch.items() for line in batch_statistics(value, f"{prefix}{key}.")]
    x = batch.detach().float().cpu()
    finite = x[torch.isfinite(x)]
    summary = (f"min {finite.min():.4g}, max {finite.max():.4g}, mean {finite.mean():.4g}" if finite.numel()
               else "no finite values")
    return [f"{prefix.rstrip('.')} {tuple(x.shape)}: {summary}, NaN {int(torch.isnan(x).sum())}, "
            f"inf {int(torch.isinf(x).sum())}"]


# ---------------------------------------------------------------------------------------------- the workspace
class TrainWorkspace:
    """Builds everything from ``cfg`` (see configs/train.yaml) and trains in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path, run_info: dict | None = None):
        check_train_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_info = dict(run_info or {})
        self.dist = Distributed(cfg.training.device)
        self.device = self.dist.device
        self.epoch = 0
        self.global_step = 0
        self.best_score = -math.inf

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        cfg, device = self.cfg, self.device
        seed_everything(cfg.training.seed)  # same initial weights on every rank

        self.dataset = instantiate(cfg.task.dataset, "task.dataset")
        self.val_dataset = self.dataset.get_validation_dataset()
        batch_size = cfg.dataloader.batch_size
        if batch_size % self.dist.world_size:
            raise ValueError(f"dataloader.batch_size={batch_size} (the global batch) must divide evenly over "
                             f"{self.dist.world_size} processes")
        # A DistributedSampler even on one process: the epoch's order is a function of (seed, epoch) only.
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.training.seed)
        # Pinned memory only helps (and only works without a warning) when batches go to a GPU.
        pin = {"pin_memory": device.type == "cuda" and cfg.dataloader.get("pin_memory", False)}
        loader_kwargs = {**OmegaConf.to_container(cfg.dataloader, resolve=True), **pin}
        loader_kwargs.pop("shuffle", None)
        loader_kwargs["batch_size"] = batch_size // self.dist.world_size
        self.train_loader = DataLoader(self.dataset, sampler=self.sampler, **loader_kwargs)
        val_kwargs = {**OmegaConf.to_container(cfg.val_dataloader, resolve=True), **pin, "shuffle": False}
        self.val_loader = DataLoader(self.val_dataset, **val_kwargs) if len(self.val_dataset) else None

        self.policy = instantiate(cfg.policy, "policy")
        self.policy.set_normalizer(self.dataset.get_normalizer())
        self.policy.to(device)
        # The EMA copy is taken after set_normalizer, so it carries the same normalizer.
        self.ema = (EMA(self.policy, decay=cfg.ema.max_decay, power=cfg.ema.power, inv_gamma=cfg.ema.inv_gamma,
                        min_decay=cfg.ema.min_decay) if cfg.training.use_ema else None)
        # forward(batch) -> (loss, metrics): DistributedDataParallel wraps the policy itself.
        self.loss_fn = self.policy
        if self.dist.world_size > 1:
            self.loss_fn = nn.parallel.DistributedDataParallel(
                self.policy, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.training.find_unused_parameters)

        self.optimizer = self.build_optimizer()
        steps_per_epoch = len(self.train_loader)
        if cfg.training.max_train_steps is not None:
            steps_per_epoch = min(steps_per_epoch, cfg.training.max_train_steps)
        self.steps_per_epoch = steps_per_epoch

        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(cfg.training.lr_scheduler, optimizer=self.optimizer,
                                          num_warmup_steps=cfg.training.lr_warmup_steps,
                                          num_training_steps=steps_per_epoch * cfg.training.num_epochs)
        self.env_runner = None
        if self.dist.is_main:
            self.env_runner = instantiate(cfg.task.env_runner, "task.env_runner", output_dir=str(self.run_dir))
        self.topk = TopKCheckpoints(self.run_dir / "checkpoints", k=cfg.checkpoint.topk)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; a policy with ``get_optim_groups(weight_decay[, obs_encoder_weight_decay])`` chooses its
        parameter groups (DP's transformer decays only weight matrices)."""
        opt = self.cfg.optimizer
        if hasattr(self.policy, "get_optim_groups"):
            extra = {} if opt.get("obs_encoder_weight_decay") is None else {
                "obs_encoder_weight_decay": opt.obs_encoder_weight_decay}
            params = self.policy.get_optim_groups(weight_decay=opt.weight_decay, **extra)
        else:
            params = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                 weight_decay=opt.weight_decay)

    # ------------------------------------------------------------------ checkpoints
    @property
    def latest_path(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.ckpt"

    def state_dict(self, rng_states: list[dict]) -> dict:
        return {
            "cfg": OmegaConf.to_container(stored_config(self.cfg), resolve=False),
            "policy": self.policy.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "epoch": self.epoch,  # the next epoch to run
            "global_step": self.global_step,
            "best_score": self.best_score,
            "rng": rng_states,  # one per rank
        }

    def restore(self, plan: StartPlan) -> bool:
        """Load the checkpoint ``plan`` resumes from (already read and checked by ``plan_start``)."""
        if plan.resume_from is None:
            return False
        state = plan.state
        try:
            self.policy.load_state_dict(state["policy"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{plan.resume_from}: does not fit this run's policy or optimizer "
                                  f"({first_line(error)})") from error
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_score = state["best_score"]
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:
            print(f"[rank {self.dist.rank}] checkpoint has RNG states of {len(state['rng'])} processes, this run "
                  f"has {self.dist.world_size}: reseeding (the resumed run will not repeat the original exactly)")
            seed_everything(self.cfg.training.seed + 1000 * self.epoch + self.dist.rank)
        if self.dist.is_main:
            print(f"Resumed from {plan.resume_from} at epoch {self.epoch}, global step {self.global_step}")
        return True

    def save(self, step_log: dict) -> None:
        """The top-k checkpoint when this epoch ranks, latest.ckpt (a copy of it), then pretrained/last. A run
        killed before latest.ckpt repeats the epoch and rewrites the same top-k file (no epoch's top-k checkpoint
        is lost); one killed after it re-exports pretrained/last when it resumes. Called by every rank (they send
        their RNG states); only rank 0 writes."""
        rng_states = self.dist.gather(rng_state())
        if not self.dist.is_main:
            return
        state = self.state_dict(rng_states)
        score = step_log.get("test/mean_score")
        topk_path = None if score is None else self.topk.save(state, epoch=self.epoch - 1, score=float(score))
        if topk_path is None:
            atomic_save(state, self.latest_path)
        else:
            atomic_copy(topk_path, self.latest_path)
        self.export("last")
        self.topk.prune()

    def eval_policy(self) -> nn.Module:
        return self.policy if self.ema is None else self.ema.model

    def export(self, name: str) -> None:
        """The evaluation (EMA) policy as ``<run>/pretrained/<name>/``, with the run's config beside it so that
        ``drifting-policy eval`` knows the task."""
        atomic_save_pretrained(self.eval_policy(), self.run_dir / "pretrained" / name,
                               {"train_config.yaml": OmegaConf.to_yaml(stored_config(self.cfg))})

    # ------------------------------------------------------------------ logging
    def write_run_info(self) -> None:
        """run_info.json: what the run is (read by ``report``). A resumed run keeps its original entries."""
        path = self.run_dir / "run_info.json"
        info = {"task": self.cfg.task.name, "policy": self.cfg.policy._target_.rsplit(".", 1)[-1],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        if path.exists():
            try:
                info.update(json.loads(path.read_text()))
            except ValueError:
                print(f"warning: {path} is not readable JSON; writing it afresh", file=sys.stderr)
        info.update(self.run_info)
        info.update(policy_target=self.cfg.policy._target_, seed=self.cfg.training.seed,
                    world_size=self.dist.world_size)
        info.setdefault("wandb_id", f"{info['task']}-{info['policy']}-{int(time.time())}")
        self.run_info = info
        atomic_write_text(path, json.dumps(info, indent=2) + "\n")

    def plot(self) -> None:
        plot_training_curves(self.run_dir / "logs.json.txt", self.run_dir / "plots" / "training_curves.png",
                             title=f"{self.run_info.get('task')} / {self.run_info.get('policy')}")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if self.val_loader is None:
            return None
        self.policy.eval()
        losses = []
        for batch_idx, batch in enumerate(self.val_loader):
            if self.cfg.training.max_val_steps is not None and batch_idx >= self.cfg.training.max_val_steps:
                break
            losses.append(self.policy.compute_loss(to_device(batch, self.device)).item())
        self.policy.train()
        return float(np.mean(losses)) if losses else None

    def rollout(self) -> dict:
        policy = self.eval_policy()
        policy.eval()
        seed = self.cfg.training.rollout_seed
        with seeded_rng(seed):
            log = self.env_runner.run(policy)
        if "test/mean_score" not in log:
            raise KeyError(f"the env runner {type(self.env_runner).__name__} returned no 'test/mean_score' "
                           f"(keys: {sorted(log)[:10]}...)")
        return {**log, "rollout_seed": seed}

    @torch.no_grad()
    def train_action_error(self, batch) -> float:
        """DP's ``train_action_mse_error``: mean squared error, in data units, between the chunks the evaluated
        (EMA) policy samples for a training batch's observations and the demonstrated chunks. A fit measure that
        needs no simulator. Sampled under a forked, epoch-seeded random state, so the training stream is the same
        whether or not this runs."""
        policy = self.eval_policy()
        policy.eval()
        obs = batch["obs"] if isinstance(batch["obs"], dict) else {"obs": batch["obs"]}
        with seeded_rng(self.epoch):
            predicted = policy.predict_action(obs)["action_pred"]
        return float(torch.nn.functional.mse_loss(predicted, batch["action"].to(predicted)))

    # ------------------------------------------------------------------ the loop
    def train_step(self, batch) -> tuple[float, dict[str, torch.Tensor]]:
        """One update; the loss (mean over ranks) and the policy's metrics on this rank's batch, still tensors."""
        loss, metrics = self.loss_fn(batch)
        loss_value = self.dist.mean(loss.detach()).item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"training loss is {loss_value} at global step {self.global_step} (epoch {self.epoch}): "
                f"{self.non_finite_cause(batch)}; nothing was updated or saved for this step (checkpoints: "
                f"{self.latest_path.parent}). Batch on rank {self.dist.rank}:\n  "
                + "\n  ".join(batch_statistics(batch)))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        return loss_value, {f"policy/{key}": value for key, value in metrics.items() if key != "loss"}

    def non_finite_cause(self, batch) -> str:
        """Where a non-finite loss comes from, as far as can be told without the loss's internals."""
        tensors = {**dict(self.policy.named_parameters()), **dict(self.policy.named_buffers())}
        name = first_non_finite(tensors)
        if name is not None and "normalizer" in name:
            return (f"the policy's normalizer holds non-finite values ({name}), so it was fitted to or loaded with "
                    "non-finite data")
        if name is not None:
            return f"the policy's weights hold non-finite values ({name}): an earlier update diverged"
        bad = [line.split(" (")[0] for line in batch_statistics(batch) if not line.endswith("NaN 0, inf 0")]
        if bad:
            return f"the batch holds non-finite values ({', '.join(bad)})"
        return ("the weights, the normalizer and the batch are finite, so the loss computation itself produced it "
                "(an overflow, or a policy option such as a temperature)")

    def run(self) -> None:
        lock = self.take_lock()
        run_log = None
        try:
            plan = plan_start(self.run_dir, self.cfg)
            self.build()
            if not self.restore(plan):
                seed_everything(self.cfg.training.seed + self.dist.rank)  # ranks draw different noise in compute_loss
            self.dist.barrier()  # every rank has read the folder before rank 0 writes to it
            if self.dist.is_main:
                self.prepare_folder(plan)
                run_log = self.open_log()
            self.dist.barrier()
            self.loop(run_log)
            if self.dist.is_main:
                self.print_summary()
        finally:
            if run_log is not None:
                run_log.close()
            if getattr(self, "env_runner", None) is not None and hasattr(self.env_runner, "close"):
                self.env_runner.close()
            if lock is not None:
                lock.release()
            self.dist.close()

    def open_log(self) -> RunLog:
        """logs.json.txt from the step this run continues at, and wandb as ``logging.mode`` says (offline by
        default, under <run>/wandb)."""
        log_cfg = self.cfg.logging
        run_log = RunLog(self.run_dir, resume_step=self.global_step, wandb_mode=log_cfg.mode,
                         project=log_cfg.project, name=log_cfg.name or self.run_dir.name, group=log_cfg.group,
                         tags=list(log_cfg.tags or []), id=self.run_info["wandb_id"],
                         config=OmegaConf.to_container(self.cfg, resolve=True))
        for line in run_log.json.kept_bad_lines:
            print(f"warning: {bad_line_message(run_log.json.path, line)} (kept in place)", file=sys.stderr)
        return run_log

    def take_lock(self) -> RunLock | None:
        """Rank 0 takes the folder's lock; every rank learns whether it could."""
        lock, refusal = None, None
        if self.dist.is_main:
            try:
                lock = RunLock(self.run_dir).acquire()
            except RunFolderError as error:
                refusal = error
        refusals = self.dist.gather(None if refusal is None else str(refusal))
        if refusal is not None:
            raise refusal
        if refusals[0] is not None:
            raise RunFolderError(refusals[0])
        return lock

    def prepare_folder(self, plan: StartPlan) -> None:
        """The first writes into the run folder, once every check has passed."""
        for warning in plan.warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if plan.remove_old_run:
            remove_run(self.run_dir)
        removed = remove_temp_files(self.run_dir)
        if removed:
            print(f"removed {len(removed)} temporary file(s) a killed run left: "
                  f"{', '.join(str(path.relative_to(self.run_dir)) for path in removed)}", flush=True)
        save_config(stored_config(self.cfg), self.run_dir / ".hydra" / "config.yaml")
        self.write_run_info()
        if plan.resume_from is not None:  # what a kill after latest.ckpt may have left undone
            self.export("last")
            self.topk.prune()

    def print_summary(self) -> None:
        """Where the results are, and the scores of the last rollouts as ``drifting-policy report`` computes them."""
        run = load_run(self.run_dir, "test/mean_score")
        lines = [f"Run finished: {self.run_dir}"]
        if run.scores:
            last = min(len(run.scores), 10)
            lines.append(f"  test/mean_score at epoch {self.epoch - 1}: {run.scores[-1]:.3f} (mean of the last {last} "
                         f"rollouts: {run.last_mean(last):.3f}, best {run.max():.3f})")
        lines.append(f"  log: {self.run_dir / 'logs.json.txt'}")
        for label, path in (("plot", self.run_dir / "plots" / "training_curves.png"),
                            ("videos", self.run_dir / "media"), ("policy", self.run_dir / "pretrained" / "last")):
            if path.exists():
                lines.append(f"  {label}: {path}")
        print("\n".join(lines), flush=True)

    def loop(self, run_log: RunLog | None) -> None:
        """Epochs until ``training.num_epochs``; ``run_log`` is None on the ranks that do not log."""
        cfg, train = self.cfg, self.cfg.training

        def log(step_log: dict) -> None:
            if run_log is not None:
                run_log.log(step_log, step=self.global_step)

        self.policy.train()
        while self.epoch < train.num_epochs:
            self.sampler.set_epoch(self.epoch)
            train_losses, first_batch = [], None
            batches = tqdm(self.train_loader, total=self.steps_per_epoch, desc=f"epoch {self.epoch}", leave=False,
                           mininterval=train.tqdm_interval_sec, disable=not self.dist.is_main)
            for batch_idx, batch in enumerate(batches):
                batch = to_device(batch, self.device)
                first_batch = batch if first_batch is None else first_batch
                loss, metrics = self.train_step(batch)
                train_losses.append(loss)
                batches.set_postfix(loss=loss, refresh=False)
                step_log = {"train_loss": loss, "global_step": self.global_step, "epoch": self.epoch,
                            "lr": self.lr_scheduler.get_last_lr()[0], **metrics}
                if batch_idx == self.steps_per_epoch - 1:
                    break  # the epoch's last line also carries validation and rollout results
                log(step_log)
                self.global_step += 1
            batches.close()

            # ---- end of epoch: Diffusion Policy's order and cadence (epoch 0 included)
            step_log["train_loss"] = float(np.mean(train_losses))
            # DP's cadence, plus the last epoch, so every run ends with the final policy's score.
            rollout_due = (self.epoch % train.rollout_every == 0 or self.epoch == train.num_epochs - 1) and (
                self.epoch >= train.rollout_from_epoch)
            if self.dist.is_main:
                if rollout_due:
                    step_log.update(self.rollout())
                if self.epoch % train.sample_every == 0:
                    step_log["train_action_mse_error"] = self.train_action_error(first_batch)
                if self.epoch % train.val_every == 0:
                    val_loss = self.validation_loss()
                    if val_loss is not None:
                        step_log["val_loss"] = val_loss
                self.policy.train()
                log(step_log)
                score = step_log.get("test/mean_score")
                if score is not None and score > self.best_score:
                    self.best_score = float(score)
                    self.export("best")
            self.dist.barrier()
            finished_epoch = self.epoch
            self.global_step += 1
            self.epoch += 1

            last_epoch = self.epoch == train.num_epochs
            # The plot before the checkpoint: a run killed in between repeats the epoch, plot included.
            if self.dist.is_main and cfg.logging.plots and (rollout_due or last_epoch):
                self.plot()
            if finished_epoch % train.checkpoint_every == 0 or last_epoch or rollout_due:
                self.save(step_log)
