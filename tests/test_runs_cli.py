"""Configs validated before anything is built, and mistakes said in one line with a hint (issue 23): the typed schema
of train.yaml's sections, hydra's own errors rewritten, `train --help`, `--debug`, `eval which=`, `drifting-toy
--steps 0`."""
from __future__ import annotations

import pytest
import torch

from drifting.toy import main as toy_main
from drifting_policy import cli, config
from drifting_policy.config import CONFIG_DIR, check_train_config, compose_train_config
from drifting_policy.errors import ConfigError
from test_policy_training import FAST, config_dir, train, zarr_path  # noqa: F401  (fixtures)


@pytest.fixture
def tiny(config_dir, zarr_path, tmp_path, monkeypatch):  # noqa: F811
    """The CLI on the tiny task; returns the arguments of a valid run in a new folder."""
    monkeypatch.setattr(config, "CONFIG_DIR", config_dir)
    monkeypatch.chdir(tmp_path)
    return ["train", "task=tiny", "method=tiny_mlp", "network=none", f"task.zarr_path={zarr_path}",
            f"run_dir={tmp_path / 'run'}", *FAST]


def reported_error(capsys, argv: list[str]) -> str:
    """The CLI's error line for ``argv`` (exit status 2, two lines on stderr: error and hint, no traceback)."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    return lines[0]


CONFIG_MISTAKES = [
    ("training.num_epochs=abc", "training.num_epochs='abc': must be an integer"),
    ("training.num_epochs=0", "training.num_epochs=0: must be an integer >= 1"),
    ("training.rollout_every=0", "training.rollout_every=0: must be an integer >= 1"),
    ("dataloader.batch_size=0", "dataloader.batch_size=0: must be an integer >= 1"),
    ("val_dataloader.batch_size=-1", "val_dataloader.batch_size=-1: must be an integer >= 1"),
    ("+training.num_epoch=1", "training.num_epoch: unknown key (did you mean training.num_epochs?); training takes "),
    ("training.num_epoch=1", "training.num_epoch: unknown key (did you mean training.num_epochs?)"),
    ("+dataloader.shufle=true", "dataloader.shufle: unknown key (did you mean dataloader.shuffle?)"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]: must be two numbers in [0, 1)"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0: must be a number > 0"),
    ("logging.mode=cloud", "logging.mode='cloud': must be one of offline, online, disabled"),
    ("training.lr_scheduler=cosin", "training.lr_scheduler='cosin': must be one of linear, cosine, "),
    ("training.device=gpu", "training.device='gpu': must be auto, cpu, cuda or cuda:<index>"),
    ("+extra=1", "extra: unknown top-level key; the config takes task, policy, "),
    ("task=nope", "task=nope: no such task config; task takes tiny"),
    ("training.num_epochs=[1", "cannot read an override: "),
]


@pytest.mark.parametrize("override, message", CONFIG_MISTAKES, ids=[item[0] for item in CONFIG_MISTAKES])
def test_a_config_mistake_is_one_line_naming_key_and_value_and_nothing_is_written(tiny, tmp_path, capsys, override,
                                                                                 message):
    line = reported_error(capsys, [*tiny, override])
    assert line.startswith(f"drifting-policy train: error: {message}")
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_is_refused(tiny, capsys):
    line = reported_error(capsys, [*tiny, "training.device=cuda"])
    assert "training.device='cuda': CUDA is not available on this machine" in line


def test_the_dated_default_folder_is_not_created_for_a_refused_run(tiny, tmp_path, capsys):
    argv = [item for item in tiny if not item.startswith("run_dir=")]
    reported_error(capsys, [*argv, "training.rollout_every=0"])
    garbage = tmp_path / "garbage.zarr.zip"
    garbage.write_bytes(b"no zip")
    reported_error(capsys, [*argv, f"task.zarr_path={garbage}"])  # a data error, found after the folder is claimed
    assert not any((tmp_path / "outputs").rglob("*_tiny_mlp_tiny"))


def test_debug_and_hydra_full_error_show_the_traceback(tiny, monkeypatch):
    with pytest.raises(ConfigError, match="training.rollout_every=0"):
        cli.main([*tiny, "training.rollout_every=0", "--debug"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="training.rollout_every=0"):
        cli.main([*tiny, "training.rollout_every=0"])


def test_the_old_policy_group_is_named_with_its_replacement(tiny, capsys):
    line = reported_error(capsys, ["train", "task=tiny", "policy=drifting_unet_lowdim"])
    assert line.endswith("policy=drifting_unet_lowdim: a policy is chosen as a method and a network now, e.g. "
                         "method=drifting network=unet_lowdim (configs/method, configs/network)")


def test_train_help_lists_the_options(capsys):
    cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: drifting-policy train task=<task> method=<method> network=<network>")
    for expected in ("pusht_lowdim", "method=      diffusion, drifting", "transformer_lowdim, unet_image, unet_lowdim",
                     "pusht_cpu", "overwrite=", "training: seed=42",
                     "rollout_every=50", "rollout_seed=0", "dataloader: batch_size=256", "logging: mode=offline"):
        assert expected in out


def test_eval_which_must_name_an_export(tmp_path, capsys):
    line = reported_error(capsys, ["eval", f"checkpoint={tmp_path}", "which=nope"])
    assert line == "drifting-policy eval: error: which=nope: must be one of best, last (the run's exports)"
    line = reported_error(capsys, ["eval", f"checkpoint={tmp_path}", "seed=x"])
    assert line == "drifting-policy eval: error: seed=x: must be an integer"


def test_eval_of_a_damaged_file_is_one_line_naming_it(tmp_path, capsys):
    damaged = tmp_path / "latest.ckpt"
    damaged.write_bytes(b"PK\x03\x04 not really")
    line = reported_error(capsys, ["eval", f"checkpoint={damaged}"])
    assert line.startswith(f"drifting-policy eval: error: {damaged}: not a readable checkpoint (")


def test_a_saved_run_with_an_unknown_override_is_refused(config_dir, zarr_path, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(config, "CONFIG_DIR", config_dir)
    run = tmp_path / "run"
    train(config_dir, zarr_path, run, "training.num_epochs=1", "training.max_train_steps=1", "logging.plots=false")
    capsys.readouterr()
    line = reported_error(capsys, ["train", f"run_dir={run}", "+training.num_epoch=3"])
    assert "training.num_epoch: unknown key (did you mean training.num_epochs?)" in line


def test_toy_steps_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        toy_main(["fig3", "--steps", "0"])
    assert stop.value.code == 2
    assert "--steps must be at least 1; got 0" in capsys.readouterr().err


EXPERIMENTS = {"pusht_cpu": "pusht_lowdim", "blockpush_cpu": "blockpush_lowdim",
               "blockpush_unet_cpu": "blockpush_lowdim", "kitchen_cpu": "kitchen_lowdim",
               "robomimic_cpu": "lift_lowdim"}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_experiment_and_policy_fits_the_schema(experiment, tmp_path):
    assert sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")) == sorted(EXPERIMENTS)
    for method in ("drifting", "diffusion"):
        for network in ("unet_lowdim", "transformer_lowdim"):
            cfg, _ = compose_train_config([f"task={EXPERIMENTS[experiment]}", f"method={method}", f"network={network}",
                                           f"experiment={experiment}"])
            check_train_config(cfg, source=f"experiment={experiment} method={method} network={network}")
