"""The policy configs: method x network compose with the tasks, the dataclasses are their only defaults, a network
brings its optimizer recipe, and every training command the README and docs name composes."""
import dataclasses
import itertools
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from drifting_policy.config import check_train_config, compose_train_config
from drifting_policy.policies import DiffusionPolicy, DiffusionPolicyConfig, DriftingPolicy, DriftingPolicyConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["policy.config.down_dims=[16,32]", "policy.config.n_layer=1", "policy.config.n_emb=32"]
METHODS = {"drifting": (DriftingPolicy, DriftingPolicyConfig), "diffusion": (DiffusionPolicy, DiffusionPolicyConfig)}


@pytest.mark.parametrize("network, task_name", [
    ("unet_lowdim", "pusht_lowdim"), ("transformer_lowdim", "pusht_lowdim"), ("unet_image", "pusht_image")])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_and_network_build_the_policy(method, network, task_name):
    cfg, choices = compose_train_config([f"task={task_name}", f"method={method}", f"network={network}"])
    assert choices == {"task": task_name, "method": method, "network": network}
    full = cfg.policy.config
    assert full.horizon == cfg.task.horizon and full.n_obs_steps == cfg.task.n_obs_steps
    cfg, _ = compose_train_config([f"task={task_name}", f"method={method}", f"network={network}", *SMALL])
    policy = instantiate(cfg.policy)
    policy_class, _ = METHODS[method]
    assert type(policy) is policy_class
    assert policy.config.backbone == network.split("_")[0]
    assert policy.config.horizon == cfg.task.horizon and policy.config.action_dim == 2
    assert policy.config.down_dims == (16, 32)
    if "image" in task_name:
        assert policy.config.shape_meta["obs"]["image"]["shape"] == (3, 96, 96)
        assert policy.config.crop_shape == (84, 84)
    assert all(torch.isfinite(p).all() for p in policy.parameters())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_dataclass_is_the_only_source_of_a_policys_defaults(method):
    """With a network that sets only the backbone, the composed policy config is the dataclass's defaults, field
    for field; and a changed default would reach the configs without a YAML edit (no YAML repeats one)."""
    cfg, _ = compose_train_config(["task=pusht_lowdim", f"method={method}", "network=unet_lowdim"])
    composed = OmegaConf.to_container(cfg.policy.config, resolve=True)
    _, config_class = METHODS[method]
    built = config_class(**composed)
    for field in dataclasses.fields(config_class):
        if field.name not in ("horizon", "n_obs_steps", "n_action_steps", "obs_dim", "action_dim", "shape_meta"):
            assert getattr(built, field.name) == field.default, field.name
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    for path in [*(ROOT / "configs" / "method").glob("*.yaml"), *(ROOT / "configs" / "network").glob("*.yaml")]:
        node = OmegaConf.to_container(OmegaConf.load(path))
        written = {**node.get("config", {}), **node.get("policy", {}).get("config", {})}
        written.pop("backbone", None)  # what a network file is for, even where it is the default
        for key, value in written.items():  # a size a network changes, never a value equal to the default
            default = defaults[key]
            assert value != (list(default) if isinstance(default, tuple) else default), f"{path.name}: {key}"


@pytest.mark.parametrize("task_name", ["pusht_lowdim", "blockpush_lowdim", "kitchen_lowdim"])
def test_a_network_brings_its_optimizer_recipe(task_name):
    """The transformer trains with DP's transformer recipe whatever the task (it used to come only with the
    BlockPush experiment); the U-Net with train.yaml's (DP's U-Net recipe)."""
    transformer, _ = compose_train_config([f"task={task_name}", "method=drifting", "network=transformer_lowdim"])
    unet, _ = compose_train_config([f"task={task_name}", "method=drifting", "network=unet_lowdim"])
    assert (list(transformer.optimizer.betas), transformer.optimizer.weight_decay) == ([0.9, 0.95], 1e-3)
    assert transformer.training.lr_warmup_steps == 1000
    assert (list(unet.optimizer.betas), unet.optimizer.weight_decay) == ([0.95, 0.999], 1e-6)
    policy = instantiate(compose_train_config([f"task={task_name}", "method=drifting", "network=transformer_lowdim",
                                               *SMALL])[0].policy)
    decayed = policy.get_optim_groups(1e-3)
    assert [group["weight_decay"] for group in decayed] == [1e-3, 0.0]  # weight matrices only


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pusht_cpu_experiment_sets_the_cpu_budget(method):
    cfg, choices = compose_train_config(["task=pusht_lowdim", f"method={method}", "network=unet_lowdim",
                                         "experiment=pusht_cpu"])
    assert choices["experiment"] == "pusht_cpu"
    assert (cfg.training.num_epochs, cfg.dataloader.batch_size, cfg.optimizer.lr) == (7, 64, 1e-3)
    assert cfg.task.dataset.max_train_episodes is None and cfg.task.env_runner.n_test == 50
    policy = instantiate(cfg.policy)
    assert type(policy) is METHODS[method][0] and policy.config.down_dims == (32, 64, 128)
    default, _ = compose_train_config(["task=pusht_lowdim", f"method={method}", "network=unet_lowdim"])
    assert default.training.num_epochs == 5000 and default.policy.config.down_dims == [256, 512, 1024]


@pytest.mark.parametrize("experiment, task_name, network", [
    ("pusht_cpu", "pusht_lowdim", "unet_lowdim"),
    ("robomimic_cpu", "can_lowdim", "unet_lowdim"),
    ("kitchen_cpu", "kitchen_lowdim", "unet_lowdim"),
    ("kitchen_cpu", "kitchen_lowdim", "transformer_lowdim"),
    ("blockpush_cpu", "blockpush_lowdim", "transformer_lowdim"),
    ("blockpush_unet_cpu", "blockpush_lowdim", "unet_lowdim"),
])
def test_experiment_gives_drifting_and_its_dp_baseline_the_same_budget(experiment, task_name, network):
    """The README's comparisons rest on this: under one experiment config the two methods differ only in the
    method's own settings (drift temperatures vs noise schedule), never in data, network, optimizer or schedule."""

    def compose_for(method):
        cfg, _ = compose_train_config([f"task={task_name}", f"method={method}", f"network={network}",
                                       f"experiment={experiment}"])
        return OmegaConf.to_container(cfg, resolve=True)

    drifting, diffusion = compose_for("drifting"), compose_for("diffusion")
    for section in ("task", "training", "dataloader", "val_dataloader", "optimizer", "ema", "checkpoint"):
        assert drifting[section] == diffusion[section], section
    shared_network_keys = set(drifting["policy"]["config"]) & set(diffusion["policy"]["config"])
    assert {"horizon", "n_obs_steps", "backbone", "down_dims", "n_layer"} <= shared_network_keys
    for key in shared_network_keys:
        assert drifting["policy"]["config"][key] == diffusion["policy"]["config"][key], key
    default = OmegaConf.to_container(compose_train_config([f"task={task_name}", "method=drifting",
                                                           f"network={network}"])[0], resolve=True)
    assert drifting["training"]["num_epochs"] < default["training"]["num_epochs"]  # the CPU budget took effect


@pytest.mark.parametrize("method", sorted(METHODS))
def test_blockpush_unet_experiment_is_the_readme_command_line(method):
    """experiment=blockpush_unet_cpu stands for blockpush_cpu plus the U-Net horizons the README's BlockPush U-Net
    runs gave on the command line: both spellings compose to the same run (the optimizer comes with the network)."""
    base = ["task=blockpush_lowdim", f"method={method}", "network=unet_lowdim"]
    short, choices = compose_train_config(base + ["experiment=blockpush_unet_cpu"])
    long, _ = compose_train_config(base + ["experiment=blockpush_cpu", "task.horizon=16", "task.n_obs_steps=2",
                                           "task.n_action_steps=8"])
    assert choices["experiment"] == "blockpush_unet_cpu"
    assert OmegaConf.to_container(short, resolve=True) == OmegaConf.to_container(long, resolve=True)
    assert (short.task.horizon, short.task.n_obs_steps, short.task.n_action_steps) == (16, 2, 8)
    assert list(short.optimizer.betas) == [0.95, 0.999] and short.dataloader.batch_size == 64


def documented_train_commands() -> list[tuple[str, list[str]]]:
    """Every `drifting-policy train ...` command in README, docs/, the shipped model cards and configs/ comments, as
    (file, its group choices); `key=<a | b>` is expanded into one command per option, and a command holding a
    placeholder (`task=<task>`) is skipped."""
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
               *sorted((ROOT / "pretrained").glob("*/README.md")), *sorted((ROOT / "configs").rglob("*.yaml"))]
    commands = []
    for path in sources:
        text = re.sub(r"`?\s*\n\s*#?\s*`?", " ", path.read_text())  # commands wrapped over (comment) lines
        for match in re.finditer(r"drifting-policy train ((?:[\w.+]+=(?:<[^>]+>|\S+)\s*)+)", text):
            groups = re.findall(r"\b(task|method|network|experiment)=(<[^>]+>|[\w]+)", match.group(1))
            options = [[f"{key}={o.strip()}" for o in value.strip("<>").split("|")] for key, value in groups]
            if any(value.startswith("<") and "|" not in value for _, value in groups):
                continue
            for choices in itertools.product(*options):
                if {"task", "method", "network"} <= {choice.split("=")[0] for choice in choices}:
                    commands.append((path.name, list(choices)))
    return commands


def test_every_documented_train_command_composes():
    commands = documented_train_commands()
    pairs = {tuple(sorted(choices)) for _, choices in commands}
    assert len(pairs) >= 8, pairs  # README names commands for every task family
    for where, choices in commands:
        cfg, composed = compose_train_config(choices)
        check_train_config(cfg, source=f"{where}: {' '.join(choices)}")
    for _, choices in commands:  # and no documentation names a group that no longer exists
        assert not any(word.startswith("policy=") for word in choices)


def test_no_documentation_names_the_old_policy_group():
    """policy=<method>_<network> became method=<method> network=<network>."""
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "pretrained").glob("*/README.md"),
                 *(ROOT / "configs").rglob("*.yaml"), *(ROOT / "drifting_policy").rglob("*.py")]:
        assert not re.search(r"\bpolicy=(<|drifting_|diffusion_)", path.read_text()), path
