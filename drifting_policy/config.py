"""Composing and checking the hydra configs of a training run (``configs/train.yaml`` + one task + one policy).

The commands compose with hydra's compose API rather than ``@hydra.main``, so one console script can offer
``train``, ``eval`` and ``report``; the run directory and the saved ``.hydra/config.yaml`` are handled by the
workspace itself.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

# configs/ of the repository; DRIFTING_POLICY_CONFIG_DIR points elsewhere (e.g. an installed package with its own).
CONFIG_DIR = Path(os.environ.get("DRIFTING_POLICY_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))

# Task configs compute sampler padding as ${eval:'${task.n_obs_steps}-1'}, as Diffusion Policy's do.
if not OmegaConf.has_resolver("eval"):
    OmegaConf.register_new_resolver("eval", eval)

# What every task config must define (under `task.`) and what the workspace reads from the composed config.
TASK_KEYS = ("name", "horizon", "n_obs_steps", "n_action_steps", "dataset", "env_runner")
TRAIN_KEYS = ("policy", "training", "optimizer", "ema", "dataloader", "val_dataloader", "checkpoint", "logging")


def compose_train_config(overrides: list[str], config_dir: str | Path | None = None) -> tuple[DictConfig, dict]:
    """``configs/train.yaml`` with ``overrides`` (``task=pusht_lowdim policy=drifting_unet training.seed=1``).

    Returns the config (hydra's own node removed) and the chosen config-group options, e.g.
    ``{'task': 'pusht_lowdim', 'policy': 'drifting_unet'}``.
    """
    from hydra import compose, initialize_config_dir

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "train.yaml").is_file():
        raise FileNotFoundError(f"no train.yaml in {config_dir}; set DRIFTING_POLICY_CONFIG_DIR to the configs folder")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    choices = {key: value for key, value in cfg.hydra.runtime.choices.items()
               if value is not None and not key.startswith("hydra")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def check_train_config(cfg: DictConfig, source: str = "the composed config") -> None:
    """Fail early, naming the missing key, when a task or policy config breaks the contract in train.yaml."""
    missing = [key for key in TRAIN_KEYS if key not in cfg]
    if missing:
        raise KeyError(f"{source}: missing top-level key(s) {missing}; see configs/train.yaml")
    missing = [f"task.{key}" for key in TASK_KEYS if key not in cfg.task]
    if "obs_dim" not in cfg.task and "shape_meta" not in cfg.task:
        missing.append("task.obs_dim (low-dim) or task.shape_meta (image)")
    if missing:
        raise KeyError(f"{source}: the task config lacks {missing}; the keys a task must define are listed at the "
                       "top of configs/train.yaml")
    for key in ("horizon", "n_obs_steps", "n_action_steps"):
        if key in cfg and cfg[key] != cfg.task[key]:
            raise ValueError(f"{source}: {key}={cfg[key]} but task.{key}={cfg.task[key]}; the task's value is the "
                             f"one used, override task.{key}=... instead of {key}=...")
    for node, name in ((cfg.task.dataset, "task.dataset"), (cfg.task.env_runner, "task.env_runner"),
                       (cfg.policy, "policy")):
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise KeyError(f"{source}: {name} must be a mapping with a `_target_` to build it")


def save_config(cfg: DictConfig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg))
    os.replace(tmp, path)


def load_config(path: str | Path) -> DictConfig:
    """A run's saved config; settings train.yaml gained after the run was saved take train.yaml's defaults."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: expected a mapping")
    defaults = OmegaConf.load(Path(CONFIG_DIR) / "train.yaml")
    del defaults["defaults"]  # hydra's defaults list: the saved config is already composed
    return OmegaConf.merge(defaults, cfg)
