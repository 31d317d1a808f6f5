"""What the image branch's two trainers share (the generator's ``drifting_image.train`` and the feature encoder's
``drifting_image.train_mae``): configs from a dataclass, a YAML file and key=value overrides; the released
learning-rate schedule; and the loop around ``train_step``.

The loop resumes from ``out_dir`` when a checkpoint is there, logs every ``log_every`` steps to
``out_dir/logs.json.txt`` (and wandb when ``wandb`` is 'offline' or 'online') and saves every ``save_every`` steps
and at the end. Device and processes come from ``drifting.runs.Distributed`` (``device``, torchrun's variables),
as for the policies.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from drifting.runs import Distributed, RunLog


def load_config(path: str | None, overrides: list[str], schema: type):
    """A config dataclass from its defaults, an optional YAML file and key=value overrides, in that order."""
    parts = [OmegaConf.structured(schema), *([OmegaConf.load(path)] if path else []), OmegaConf.from_dotlist(overrides)]
    return OmegaConf.to_object(OmegaConf.merge(*parts))


def learning_rate(peak: float, warmup_steps: int, step: int, initial: float = 1e-6) -> float:
    """The released schedule (optax ``linear_schedule`` joined to a constant): ``initial`` at step 0, linear to
    ``peak`` at ``warmup_steps``, then constant. ``step`` counts the updates already made."""
    if step >= warmup_steps:
        return peak
    return initial + (peak - initial) * step / warmup_steps


class StepTrainer:
    """The shared loop. A subclass sets ``cfg`` (with steps, log_every, save_every, out_dir, device, wandb) and
    defines ``train_step() -> metrics`` (it advances ``self.step``), ``save()``, ``resume() -> bool`` and
    ``progress(metrics) -> dict`` (what the progress bar shows); ``start()`` runs before a fresh run's first step
    and ``after_save()`` after each save on the main process."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dist = Distributed(cfg.device)
        self.device = self.dist.device
        self.out_dir = Path(cfg.out_dir)
        self.step = 0

    def start(self) -> None:
        pass

    def after_save(self) -> None:
        pass

    def run(self) -> None:
        cfg = self.cfg
        run_log = None
        try:
            if not self.resume():
                self.start()
            if self.dist.is_main:
                run_log = RunLog(self.out_dir, resume_step=self.step, wandb_mode=cfg.wandb, config=asdict(cfg),
                                 name=self.out_dir.name)
            bar = tqdm(range(self.step, cfg.steps), initial=self.step, total=cfg.steps, disable=not self.dist.is_main)
            for _ in bar:
                metrics = self.train_step()
                if run_log is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    logged = run_log.log(metrics, step=self.step - 1)  # the 0-based index of the step taken, as DP
                    bar.set_postfix(self.progress(logged))
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
                    if self.dist.is_main:
                        self.after_save()
        finally:
            if run_log is not None:
                run_log.close()
            self.dist.close()
