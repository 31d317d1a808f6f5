"""Composing and checking the hydra configs of a training run (``configs/train.yaml`` + one task + one policy).

The commands compose with hydra's compose API rather than ``@hydra.main``, so one console script can offer
``train``, ``eval`` and ``report``; the run directory and the saved ``.hydra/config.yaml`` are handled by the
workspace itself.

train.yaml's own sections have a typed schema (OmegaConf structured configs, below): ``check_train_config``
merges each section into its schema before anything is built, so an unknown key (also one added with ``+``), a
value of the wrong type or an impossible value stops the run with one line naming the key, the value and what is
allowed. ``task`` and ``policy`` are free-form (their ``_target_`` classes check their own arguments).
"""
from __future__ import annotations

import difflib
import importlib.resources
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from drifting.files import atomic_write_text
from drifting.runs import WANDB_MODES
from drifting_policy.errors import ConfigError, DataError, UserError

# configs/ of the checkout, installed as the package drifting_policy.configs (pyproject's package-dir);
# DRIFTING_POLICY_CONFIG_DIR points elsewhere.
CONFIG_DIR = Path(os.environ.get("DRIFTING_POLICY_CONFIG_DIR", importlib.resources.files("drifting_policy.configs")))


def package_path(path: str) -> str:
    """``${package_path:envs/pusht/data/x.zarr.zip}`` in a config: that file of an installed package (here
    ``pusht/data/x.zarr.zip`` inside the package ``envs``), wherever it is installed. Data shipped with the code
    (the PushT demonstrations) is named this way so that a run finds it from any working directory; a plain
    relative path stays relative to the working directory."""
    package, _, inside = path.partition("/")
    return str(importlib.resources.files(package).joinpath(inside))


# Task configs compute sampler padding as ${eval:'${task.n_obs_steps}-1'}, as Diffusion Policy's do.
if not OmegaConf.has_resolver("eval"):
    OmegaConf.register_new_resolver("eval", eval)
if not OmegaConf.has_resolver("package_path"):
    OmegaConf.register_new_resolver("package_path", package_path)

# A policy config's task shapes, read from the task; the rest of its fields come from its dataclass.
POLICY_TASK_SHAPES = {"horizon": "${task.horizon}", "n_obs_steps": "${task.n_obs_steps}",
                      "n_action_steps": "${task.n_action_steps}", "obs_dim": "${oc.select:task.obs_dim,null}",
                      "action_dim": "${oc.select:task.action_dim,null}",
                      "shape_meta": "${oc.select:task.shape_meta,null}"}


def register_policy_defaults() -> None:
    """The config nodes ``policy_defaults/<type>`` (``drifting``, ``diffusion``) that the method configs compose
    in: every field of the policy's config dataclass with its default, and the task's shapes. The dataclasses are
    the one place a policy default is written."""
    from hydra.core.config_store import ConfigStore

    from drifting_policy.policies import POLICY_REGISTRY

    def yaml_ready(value):
        return [yaml_ready(v) for v in value] if isinstance(value, tuple) else value

    for kind, policy_class in POLICY_REGISTRY.items():
        defaults = {f.name: yaml_ready(f.default) for f in fields(policy_class.config_class)
                    if f.name not in POLICY_TASK_SHAPES}
        ConfigStore.instance().store(group="policy_defaults", name=kind, node={**POLICY_TASK_SHAPES, **defaults})


# What every task config must define (under `task.`) and what the workspace reads from the composed config.
TASK_KEYS = ("name", "horizon", "n_obs_steps", "n_action_steps", "dataset", "env_runner")
TRAIN_KEYS = ("policy", "training", "optimizer", "ema", "dataloader", "val_dataloader", "checkpoint", "logging")


# ---------------------------------------------------------------------------------------------- value rules
def device_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as a torch device here, or None ('auto' is always fine)."""
    import torch

    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return "must be auto, cpu, cuda or cuda:<index>"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (no GPU, or a CPU build of torch); use auto or cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"there are {torch.cuda.device_count()} CUDA device(s) here"
    return None


def scheduler_problem(name: str) -> str | None:
    from diffusers.optimization import SchedulerType

    names = [kind.value for kind in SchedulerType]
    return None if name in names else f"must be one of {', '.join(names)}"


def at_least(low: float, what: str = "an integer") -> Callable[[Any], str | None]:
    return lambda value: None if value is None or value >= low else f"must be {what} >= {low:g}"


def above(low: float) -> Callable[[Any], str | None]:
    return lambda value: None if value is None or value > low else f"must be a number > {low:g}"


def within(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be a number in [{low:g}, {high:g}]"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def adam_betas(value) -> str | None:
    if len(value) == 2 and all(0 <= beta < 1 for beta in value):
        return None
    return "must be two numbers in [0, 1)"


def rule(check: Callable[[Any], str | None], default: Any = MISSING) -> Any:
    """A schema field whose value must pass ``check`` (returns what is wrong, or None). Without a default the
    value comes from train.yaml."""
    return field(default=default, metadata={"check": check})


# ---------------------------------------------------------------------------------------------- the schema
# Fields without a default are required (train.yaml sets them); a default marks an optional key.
@dataclass
class TrainingSchema:
    seed: int = MISSING
    device: str = rule(device_problem)
    resume: bool = MISSING
    num_epochs: int = rule(at_least(1))
    lr_scheduler: str = rule(scheduler_problem)
    lr_warmup_steps: int = rule(at_least(0))
    use_ema: bool = MISSING
    rollout_every: int = rule(at_least(1))
    rollout_from_epoch: int = rule(at_least(0))
    rollout_seed: int = MISSING
    checkpoint_every: int = rule(at_least(1))
    val_every: int = rule(at_least(1))
    sample_every: int = rule(at_least(1))
    max_train_steps: int | None = rule(at_least(1, "null or an integer"))
    max_val_steps: int | None = rule(at_least(0, "null or an integer"))
    tqdm_interval_sec: float = rule(above(0))
    find_unused_parameters: bool = MISSING


@dataclass
class OptimizerSchema:
    lr: float = rule(above(0))
    betas: list[float] = rule(adam_betas)
    eps: float = rule(above(0))
    weight_decay: float = rule(at_least(0, "a number"))
    obs_encoder_weight_decay: float | None = rule(at_least(0, "null or a number"))


@dataclass
class EmaSchema:
    power: float = rule(above(0))
    max_decay: float = rule(within(0, 1))
    inv_gamma: float = rule(above(0))
    min_decay: float = rule(within(0, 1))


@dataclass
class DataLoaderSchema:
    """The keys train.yaml sets, plus the torch DataLoader arguments a config may add (``+dataloader.drop_last=
    true``); sampler and collate function are the workspace's."""

    batch_size: int = rule(at_least(1))
    num_workers: int = rule(at_least(0))
    pin_memory: bool = MISSING
    persistent_workers: bool = MISSING
    shuffle: bool | None = None  # ignored: the training order comes from the epoch-seeded sampler
    drop_last: bool = False
    prefetch_factor: int | None = rule(at_least(1, "null or an integer"), default=None)
    timeout: float = rule(at_least(0, "a number"), default=0.0)


@dataclass
class CheckpointSchema:
    topk: int = rule(at_least(0))


@dataclass
class LoggingSchema:
    mode: str = rule(one_of(*WANDB_MODES))
    project: str = MISSING
    name: str | None = MISSING
    group: str | None = MISSING
    tags: list[str] = MISSING
    plots: bool = MISSING


SECTION_SCHEMAS = {"training": TrainingSchema, "optimizer": OptimizerSchema, "ema": EmaSchema,
                   "dataloader": DataLoaderSchema, "val_dataloader": DataLoaderSchema,
                   "checkpoint": CheckpointSchema, "logging": LoggingSchema}
# Top-level keys besides the sections: the task and policy nodes (free-form), DP's horizon aliases, the run folder.
TOP_LEVEL_KEYS = ("task", "policy", "horizon", "n_obs_steps", "n_action_steps", "run_dir", "overwrite")


def describe_type(annotation) -> str:
    """'an integer', 'null or a number', 'a list of numbers', ... for a schema field's type."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is typing.Union:
        return f"null or {describe_type(args[0])}"
    if typing.get_origin(annotation) is list:
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(args[0], "values")
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def unknown_key_message(section: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    guess = f" (did you mean {section}.{close[0]}?)" if close else ""
    return f"{section}.{key}: unknown key{guess}; {section} takes {', '.join(allowed)}"


def validate_section(cfg: DictConfig, section: str, source: str) -> None:
    """Merge ``cfg[section]`` into its schema and apply the value rules; the first problem raises ConfigError.
    Values whose type the schema converts (e.g. ``lr: 1e-3``, which YAML reads as a string) are written back."""
    schema = SECTION_SCHEMAS[section]
    types = typing.get_type_hints(schema)
    allowed = [f.name for f in fields(schema)]
    node = cfg[section]
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{source}: {section} must be a mapping of {', '.join(allowed)}; got {node!r}")
    try:
        values = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{error.full_key or section}: {str(error).splitlines()[0]}") from None
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), values)
    except ConfigKeyError as error:
        raise ConfigError(unknown_key_message(section, str(error.key), allowed)) from None
    except ValidationError as error:
        key = str(error.full_key).split("[")[0]
        expected = describe_type(types.get(key, Any))
        raise ConfigError(f"{section}.{error.full_key}={error.value!r}: must be {expected}") from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise ConfigError(f"{source}: {section}.{missing[0]} is missing (every key of train.yaml's {section} "
                          "section must be set)")
    for spec in fields(schema):
        check = spec.metadata.get("check")
        problem = check(typed[spec.name]) if check else None
        if problem:
            raise ConfigError(f"{section}.{spec.name}={OmegaConf.to_container(typed)[spec.name]!r}: {problem}")
        if spec.name in node and not OmegaConf.is_interpolation(node, spec.name) and \
                type(node[spec.name]) is str and types[spec.name] in (int, float):
            node[spec.name] = typed[spec.name]


def validate_cross_keys(cfg: DictConfig) -> None:
    """Rules that involve two keys."""
    for section in ("dataloader", "val_dataloader"):
        loader = cfg[section]
        if loader.num_workers == 0 and (loader.persistent_workers or loader.get("prefetch_factor") is not None):
            raise ConfigError(f"{section}.persistent_workers / prefetch_factor need {section}.num_workers > 0 "
                              f"(it is 0)")
    if cfg.ema.min_decay > cfg.ema.max_decay:
        raise ConfigError(f"ema.min_decay={cfg.ema.min_decay} must not exceed ema.max_decay={cfg.ema.max_decay}")


def validate_top_level(cfg: DictConfig, source: str) -> None:
    allowed = [*TOP_LEVEL_KEYS, *SECTION_SCHEMAS]
    for key in cfg:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key}: unknown top-level key{guess}; the config takes "
                              f"{', '.join(allowed)}")
    run_dir = cfg.get("run_dir")
    if run_dir is not None and (not isinstance(run_dir, str) or not run_dir.strip()):
        raise ConfigError(f"run_dir={run_dir!r}: must be a folder path (or left out for a new dated folder)")
    if not isinstance(cfg.get("overwrite", False), bool):
        raise ConfigError(f"overwrite={cfg.overwrite!r}: must be true or false")


# ---------------------------------------------------------------------------------------------- composing
def compose_train_config(overrides: list[str], config_dir: str | Path | None = None) -> tuple[DictConfig, dict]:
    """``configs/train.yaml`` with ``overrides``
    (``task=pusht_lowdim method=drifting network=unet_lowdim training.seed=1``).

    Returns the config (hydra's own node removed) and the chosen config-group options, e.g.
    ``{'task': 'pusht_lowdim', 'method': 'drifting', 'network': 'unet_lowdim'}``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "train.yaml").is_file():
        raise FileNotFoundError(f"no train.yaml in {config_dir}; set DRIFTING_POLICY_CONFIG_DIR to the configs folder")
    register_policy_defaults()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    except HydraException as error:
        raise composition_error(error) from error
    choices = {key: value for key, value in cfg.hydra.runtime.choices.items()
               if value is not None and not key.startswith("hydra")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def composition_error(error: Exception) -> ConfigError:
    """Hydra's composition errors as one line: an unknown config-group option lists the options there are; an
    override of a key that does not exist names the keys of that section (not hydra's advice to add it with +)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" in error.missing_cfg_file:
        group, name = error.missing_cfg_file.rsplit("/", 1)
        return ConfigError(f"{group}={name}: no such {group} config; {group} takes {', '.join(error.options or [])}")
    if isinstance(error, ConfigCompositionException) and first.startswith("Could not override '"):
        key = first.split("'")[1]
        section, _, name = key.partition(".")
        if section in SECTION_SCHEMAS and name and "." not in name:
            return ConfigError(unknown_key_message(section, name, [f.name for f in fields(SECTION_SCHEMAS[section])]))
        return ConfigError(f"{key}: no such key in the composed config (check the spelling; a task or policy "
                           f"argument that is really new is added with +{key}=...)")
    if isinstance(error, OverrideParseException):
        return ConfigError(f"cannot read an override: {first}",
                           hint="overrides are key=value in hydra's syntax "
                                "(https://hydra.cc/docs/advanced/override_grammar/basic)")
    return ConfigError(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def check_train_config(cfg: DictConfig, source: str = "the composed config") -> None:
    """Fail before anything is built, naming the key, when the config breaks the schema of train.yaml's
    sections or the contract between train.yaml, the task and the policy."""
    missing = [key for key in TRAIN_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"{source}: missing top-level key(s) {missing}; see configs/train.yaml")
    validate_top_level(cfg, source)
    for section in SECTION_SCHEMAS:
        validate_section(cfg, section, source)
    validate_cross_keys(cfg)
    if not isinstance(cfg.task, DictConfig):
        raise ConfigError(f"{source}: task must be a mapping (a task config); got {cfg.task!r}")
    missing = [f"task.{key}" for key in TASK_KEYS if key not in cfg.task]
    if "obs_dim" not in cfg.task and "shape_meta" not in cfg.task:
        missing.append("task.obs_dim (low-dim) or task.shape_meta (image)")
    if missing:
        raise ConfigError(f"{source}: the task config lacks {missing}; the keys a task must define are listed at "
                          "the top of configs/train.yaml")
    for key in ("horizon", "n_obs_steps", "n_action_steps"):
        if key in cfg and cfg[key] != cfg.task[key]:
            raise ConfigError(f"{source}: {key}={cfg[key]} but task.{key}={cfg.task[key]}; the task's value is "
                              f"the one used, override task.{key}=... instead of {key}=...")
    for node, name in ((cfg.task.dataset, "task.dataset"), (cfg.task.env_runner, "task.env_runner"),
                       (cfg.policy, "policy")):
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"{source}: {name} must be a mapping with a `_target_` to build it")


def save_config(cfg: DictConfig, path: str | Path) -> None:
    atomic_write_text(path, OmegaConf.to_yaml(cfg))


def load_config(path: str | Path) -> DictConfig:
    """A run's saved config; settings train.yaml gained after the run was saved take train.yaml's defaults."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come from several parser classes
        raise ConfigError(f"{path}: not a readable config ({str(error).splitlines()[0]})") from error
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping")
    defaults = OmegaConf.load(Path(CONFIG_DIR) / "train.yaml")
    del defaults["defaults"]  # hydra's defaults list: the saved config is already composed
    return OmegaConf.merge(defaults, cfg)


def first_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return str(text).splitlines()[0] if str(text) else type(error).__name__


def instantiate(node: DictConfig, name: str, **kwargs):
    """``hydra.utils.instantiate``, with what is the user's to fix said in one line naming the config node: hydra
    wraps whatever a constructor raises (a data error, a wrong argument) in a long InstantiationException."""
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, FileNotFoundError):
            raise DataError(f"{name}: {first_line(cause)}", hint="a relative path in a task config is relative to "
                            "the folder you start in; start in the repository, or override it with an absolute "
                            "path (task.zarr_path=..., task.dataset_path=...)") from error
        if isinstance(cause, (TypeError, ValueError, KeyError)):
            raise ConfigError(f"{name}: {type(cause).__name__}: {first_line(cause)}") from error
        raise
