"""Every policy config in configs/policy composes with a matching task config and builds its policy."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from drifting_policy.policies import DiffusionPolicy, DriftingPolicy

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = ["++policy.config.down_dims=[16,32]", "++policy.config.n_layer=1", "++policy.config.n_emb=32"]


@pytest.mark.parametrize("policy_name, task_name, policy_class", [
    ("drifting_unet_lowdim", "pusht_lowdim", DriftingPolicy),
    ("drifting_transformer_lowdim", "pusht_lowdim", DriftingPolicy),
    ("drifting_unet_image", "pusht_image", DriftingPolicy),
    ("diffusion_unet_lowdim", "pusht_lowdim", DiffusionPolicy),
    ("diffusion_transformer_lowdim", "pusht_lowdim", DiffusionPolicy),
    ("diffusion_unet_image", "pusht_image", DiffusionPolicy),
])
def test_policy_config_builds(policy_name, task_name, policy_class):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(overrides=[f"+task={task_name}", f"+policy={policy_name}"])
        full = cfg.policy.config
        assert full.horizon == cfg.task.horizon and full.n_obs_steps == cfg.task.n_obs_steps
        cfg = compose(overrides=[f"+task={task_name}", f"+policy={policy_name}", *SMALL])
    policy = instantiate(cfg.policy)
    assert type(policy) is policy_class
    assert policy.config.horizon == cfg.task.horizon and policy.config.action_dim == 2
    if policy.config.backbone == "unet" and "image" not in task_name:
        assert policy.config.down_dims == (16, 32)
    if "image" in task_name:
        assert policy.config.shape_meta["obs"]["image"]["shape"] == (3, 96, 96)
        assert policy.config.crop_shape == (84, 84)
    assert policy.config.to_dict()["type"] == policy_class.config_class.type
    assert all(torch.isfinite(p).all() for p in policy.parameters())


@pytest.mark.parametrize("policy_name, policy_class", [
    ("drifting_unet_lowdim", DriftingPolicy), ("diffusion_unet_lowdim", DiffusionPolicy)])
def test_pusht_cpu_experiment_sets_the_cpu_budget(policy_name, policy_class):
    from drifting_policy.config import compose_train_config

    cfg, choices = compose_train_config(["task=pusht_lowdim", f"policy={policy_name}", "experiment=pusht_cpu"])
    assert choices["experiment"] == "pusht_cpu"
    assert (cfg.training.num_epochs, cfg.dataloader.batch_size, cfg.optimizer.lr) == (7, 64, 1e-3)
    assert cfg.task.dataset.max_train_episodes is None and cfg.task.env_runner.n_test == 50
    policy = instantiate(cfg.policy)
    assert type(policy) is policy_class and policy.config.down_dims == (32, 64, 128)
    default, _ = compose_train_config(["task=pusht_lowdim", f"policy={policy_name}"])
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
    from omegaconf import OmegaConf

    from drifting_policy.config import compose_train_config

    def compose_for(method):
        cfg, _ = compose_train_config([f"task={task_name}", f"policy={method}_{network}", f"experiment={experiment}"])
        return OmegaConf.to_container(cfg, resolve=True)

    drifting, diffusion = compose_for("drifting"), compose_for("diffusion")
    for section in ("task", "training", "dataloader", "val_dataloader", "optimizer", "ema", "checkpoint"):
        assert drifting[section] == diffusion[section], section
    shared_network_keys = set(drifting["policy"]["config"]) & set(diffusion["policy"]["config"])
    assert {"horizon", "n_obs_steps", "backbone"} <= shared_network_keys
    for key in shared_network_keys:
        assert drifting["policy"]["config"][key] == diffusion["policy"]["config"][key], key
    default = OmegaConf.to_container(compose_train_config([f"task={task_name}", f"policy=drifting_{network}"])[0],
                                     resolve=True)
    assert drifting["training"]["num_epochs"] < default["training"]["num_epochs"]  # the CPU budget took effect


@pytest.mark.parametrize("method", ["drifting", "diffusion"])
def test_blockpush_unet_experiment_is_the_readme_command_line(method):
    """experiment=blockpush_unet_cpu stands for blockpush_cpu plus the U-Net horizons and optimizer the README's
    BlockPush U-Net runs gave on the command line: both spellings must compose to the same run."""
    from omegaconf import OmegaConf

    from drifting_policy.config import compose_train_config

    base = ["task=blockpush_lowdim", f"policy={method}_unet_lowdim"]
    short, choices = compose_train_config(base + ["experiment=blockpush_unet_cpu"])
    long, _ = compose_train_config(base + [
        "experiment=blockpush_cpu", "task.horizon=16", "task.n_obs_steps=2", "task.n_action_steps=8",
        "optimizer.betas=[0.95,0.999]", "optimizer.weight_decay=1e-6"])
    assert choices["experiment"] == "blockpush_unet_cpu"
    assert OmegaConf.to_container(short, resolve=True) == OmegaConf.to_container(long, resolve=True)
    assert (short.task.horizon, short.task.n_obs_steps, short.task.n_action_steps) == (16, 2, 8)
    assert list(short.optimizer.betas) == [0.95, 0.999] and short.dataloader.batch_size == 64
