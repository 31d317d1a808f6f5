"""Training workspace, eval and report commands of the policy branch, on a tiny synthetic task.

The task is a zarr replay buffer written here (4-D observations, 2-D actions that are a fixed linear function of
the observation, whose dimensions are sinusoids); the policy is a tiny deterministic MLP (``TinyPolicy``) and the env
runner a fake (``FakeRunner``), both following the real contracts and built by hydra from ``_target_`` strings.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from drifting.checkpoint import load as load_checkpoint
from drifting.json_log import read_json_log
from drifting_policy.checkpoint import TOPK_PATTERN, TopKCheckpoints
from drifting_policy.config import CONFIG_DIR, check_train_config, compose_train_config
from drifting_policy.data import ReplayBuffer
from drifting_policy.errors import ConfigError, DataError, RunFolderError
from drifting_policy.evaluate import apply_overrides, evaluate, runner_key
from drifting_policy.normalizer import LinearNormalizer
from drifting_policy.policies import BasePolicy
from drifting_policy.report import main as report_main
from drifting_policy.workspace import NonFiniteLossError, TrainWorkspace

OBS_DIM, ACTION_DIM = 4, 2


# ---------------------------------------------------------------------------------------------- fakes
@dataclasses.dataclass
class TinyPolicyConfig:
    obs_dim: int
    action_dim: int
    horizon: int
    n_obs_steps: int
    n_action_steps: int
    hidden: int = 32
    nan_after_calls: int | None = None  # compute_loss returns NaN from this call on (training calls only)


class TinyPolicy(nn.Module):
    """An MLP from the To observation frames to the whole action window; loss = MSE in normalised units."""

    def __init__(self, obs_dim: int, action_dim: int, horizon: int, n_obs_steps: int, n_action_steps: int,
                 hidden: int = 32, nan_after_calls: int | None = None):
        super().__init__()
        self.config = TinyPolicyConfig(obs_dim, action_dim, horizon, n_obs_steps, n_action_steps, hidden,
                                       nan_after_calls)
        self.net = nn.Sequential(nn.Linear(n_obs_steps * obs_dim, hidden), nn.Mish(),
                                 nn.Linear(hidden, horizon * action_dim))
        self.normalizer = LinearNormalizer()
        self.loss_calls = 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_normalizer(self, normalizer: LinearNormalizer) -> None:
        self.normalizer.load_state_dict(normalizer.state_dict())

    def reset(self) -> None:
        pass

    def _predict(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        flat = self.normalizer["obs"].normalize(obs[:, : cfg.n_obs_steps]).flatten(1)
        return self.net(flat).view(len(obs), cfg.horizon, cfg.action_dim)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        if self.training:
            self.loss_calls += 1
        prediction = self._predict(batch["obs"])
        loss = F.mse_loss(prediction, self.normalizer["action"].normalize(batch["action"]))
        if self.training and self.config.nan_after_calls is not None and self.loss_calls > self.config.nan_after_calls:
            loss = loss * float("nan")
        return loss, {"loss": loss.detach(), "prediction_rms": prediction.detach().square().mean().sqrt()}

    def compute_loss(self, batch: dict) -> torch.Tensor:
        return self(batch)[0]

    @torch.no_grad()
    def predict_action(self, obs_dict: dict) -> dict:
        action_pred = self.normalizer["action"].unnormalize(self._predict(obs_dict["obs"]))
        start = self.config.n_obs_steps - 1
        return {"action": action_pred[:, start: start + self.config.n_action_steps], "action_pred": action_pred}

    def save_pretrained(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(dataclasses.asdict(self.config)))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory) -> TinyPolicy:
        directory = Path(directory)
        policy = cls(**json.loads((directory / "config.json").read_text()))
        policy.load_state_dict(load_file(directory / "model.safetensors"))
        return policy


class FakeRunner:
    """``n_test`` episodes whose "score" is a smooth function of the policy's action on a seeded observation;
    ``crash_on_call`` raises on that call (0-based) to interrupt a run."""

    def __init__(self, obs_dim: int, n_obs_steps: int, n_test: int = 4, test_start_seed: int = 100000,
                 crash_on_call: int | None = None, output_dir: str | None = None):
        self.obs_dim, self.n_obs_steps, self.n_test = obs_dim, n_obs_steps, n_test
        self.test_start_seed, self.crash_on_call, self.output_dir = test_start_seed, crash_on_call, output_dir
        self.calls = 0

    def run(self, policy) -> dict:
        if self.calls == self.crash_on_call:
            raise KeyboardInterrupt("FakeRunner: simulated interruption")
        self.calls += 1
        seeds = range(self.test_start_seed, self.test_start_seed + self.n_test)
        obs = torch.stack([torch.randn(self.n_obs_steps, self.obs_dim, generator=torch.Generator().manual_seed(s))
                           for s in seeds])
        action = policy.predict_action({"obs": obs.to(policy.device)})["action"].cpu()
        scores = torch.sigmoid(-action.square().mean(dim=(1, 2)) + 1.0)
        log = {f"test/sim_max_reward_{seed}": float(score) for seed, score in zip(seeds, scores, strict=True)}
        log["test/mean_score"] = float(scores.mean())
        if self.output_dir is not None:
            log[f"test/sim_video_{self.test_start_seed}"] = str(Path(self.output_dir) / "media" / "none.mp4")
        return log


# ---------------------------------------------------------------------------------------------- the task
def write_tiny_zarr(path: Path, n_episodes: int = 12, length: int = 20, nan_obs: bool = False) -> Path:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(OBS_DIM, ACTION_DIM)).astype(np.float32)
    buffer = ReplayBuffer.create_empty()
    for _ in range(n_episodes):
        # smooth, so two frames predict the next few: phases differ per episode, frequencies per dimension
        obs = np.sin(0.3 * np.arange(length)[:, None] * np.arange(1, OBS_DIM + 1) + rng.uniform(0, 2 * np.pi, OBS_DIM))
        obs = obs.astype(np.float32)
        if nan_obs:
            obs[5] = np.nan
        buffer.add_episode({"obs": obs, "action": obs @ mixing})
    return buffer.save_to_path(path)


TASK_YAML = """
name: tiny
obs_dim: 4
action_dim: 2
horizon: 4
n_obs_steps: 2
n_action_steps: 2
zarr_path: ???
dataset:
  _target_: drifting_policy.data.dataset.SequenceDataset
  data: ${task.zarr_path}
  obs_keys: [obs]
  action_key: action
  horizon: ${task.horizon}
  pad_before: ${eval:'${task.n_obs_steps}-1'}
  pad_after: ${eval:'${task.n_action_steps}-1'}
  val_ratio: 0.1
env_runner:
  _target_: test_policy_training.FakeRunner
  obs_dim: ${task.obs_dim}
  n_obs_steps: ${task.n_obs_steps}
  n_test: 4
"""

POLICY_YAML = """
# @package policy
_target_: test_policy_training.TinyPolicy
obs_dim: ${task.obs_dim}
action_dim: ${task.action_dim}
horizon: ${task.horizon}
n_obs_steps: ${task.n_obs_steps}
n_action_steps: ${task.n_action_steps}
"""

# The real methods (their dataclass defaults, as configs/method composes them), a little cheaper.
REAL_METHOD_YAML = """
# @package policy
defaults:
  - /policy_defaults/{kind}@config
  - _self_
_target_: drifting_policy.policies.{cls}
config:
  {extra}
"""
REAL_POLICIES = {"drifting_tiny": ("drifting", "DriftingPolicy", "n_generated: 4"),
                 "diffusion_tiny": ("diffusion", "DiffusionPolicy", "num_train_timesteps: 10")}
# A 2-level U-Net of 16/32 channels, and no network at all for the tiny MLP policy.
NETWORK_YAML = {"unet_tiny": """
# @package _global_
policy:
  config:
    backbone: unet
    down_dims: [16, 32]
    kernel_size: 3
    n_groups: 4
    diffusion_step_embed_dim: 16
""", "none": "# @package _global_\n"}
# The test's policy names as (method, network) choices.
POLICY_CHOICES = {"tiny_mlp": ("tiny_mlp", "none"), "drifting_tiny": ("drifting_tiny", "unet_tiny"),
                  "diffusion_tiny": ("diffusion_tiny", "unet_tiny")}


def policy_overrides(policy: str) -> list[str]:
    method, network = POLICY_CHOICES[policy]
    return [f"method={method}", f"network={network}"]

FAST = ["dataloader.batch_size=32", "dataloader.num_workers=0", "dataloader.pin_memory=false",
        "val_dataloader.batch_size=64", "val_dataloader.num_workers=0", "val_dataloader.pin_memory=false",
        "logging.mode=disabled", "training.device=cpu", "training.lr_warmup_steps=5", "optimizer.lr=1e-2",
        "training.tqdm_interval_sec=60"]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    """The real train.yaml with a tiny task and policy beside it."""
    root = tmp_path_factory.mktemp("configs")
    shutil.copy(CONFIG_DIR / "train.yaml", root / "train.yaml")
    for group in ("task", "method", "network"):
        (root / group).mkdir()
    (root / "task" / "tiny.yaml").write_text(TASK_YAML)
    (root / "method" / "tiny_mlp.yaml").write_text(POLICY_YAML)
    for name, (kind, cls, extra) in REAL_POLICIES.items():
        (root / "method" / f"{name}.yaml").write_text(REAL_METHOD_YAML.format(kind=kind, cls=cls, extra=extra))
    for name, text in NETWORK_YAML.items():
        (root / "network" / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture(scope="module")
def zarr_path(tmp_path_factory) -> Path:
    return write_tiny_zarr(tmp_path_factory.mktemp("data") / "tiny.zarr")


def make_cfg(config_dir: Path, zarr_path: Path, run_dir: Path, *overrides: str, policy: str = "tiny_mlp"):
    cfg, choices = compose_train_config(["task=tiny", *policy_overrides(policy), f"task.zarr_path={zarr_path}",
                                         f"run_dir={run_dir}", *FAST, *overrides], config_dir=config_dir)
    method, network = POLICY_CHOICES[policy]
    assert choices == {"task": "tiny", "method": method, "network": network}
    return cfg


def train(config_dir, zarr_path, run_dir, *overrides, policy: str = "tiny_mlp"):
    cfg = make_cfg(config_dir, zarr_path, run_dir, *overrides, policy=policy)
    TrainWorkspace(cfg, run_dir, run_info={"task": "tiny", "policy": policy}).run()
    return read_json_log(Path(run_dir) / "logs.json.txt")


def epoch_lines(records):
    return [r for r in records if "val_loss" in r or "test/mean_score" in r]


@pytest.fixture(scope="module")
def trained_run(config_dir, zarr_path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny_run"
    train(config_dir, zarr_path, run_dir, "training.num_epochs=6", "training.rollout_every=2",
          "training.checkpoint_every=2", "checkpoint.topk=2")
    return run_dir


# ---------------------------------------------------------------------------------------------- training
def test_training_run_logs_checkpoints_and_exports(trained_run):
    records = read_json_log(trained_run / "logs.json.txt")
    for record in records:
        # The policy's metrics (forward's second output, tensors) are logged as policy/<name>, its loss once.
        assert {"train_loss", "global_step", "epoch", "lr", "policy/prediction_rms"} <= set(record)
        assert "policy/loss" not in record and isinstance(record["policy/prediction_rms"], float)
    assert [r["global_step"] for r in records] == list(range(len(records)))
    # one line per batch; the epoch's last one carries the epoch mean, val loss and (every 2nd epoch and the last) the
    # score
    ends = [r for r in records if "val_loss" in r]
    assert [r["epoch"] for r in ends] == list(range(6))
    assert [r["epoch"] for r in records if "test/mean_score" in r] == [0, 2, 4, 5]  # DP's cadence + the last
    assert len(records) == 6 * 7  # 209 training windows / batch 32 -> 7 batches per epoch
    # the loss goes down and the schedule warms up, then decays
    assert ends[-1]["train_loss"] < 0.4 * ends[0]["train_loss"]
    assert ends[-1]["val_loss"] < 0.5 * ends[0]["val_loss"]
    # DP's train_action_mse_error every sample_every (5) epochs: the sampled chunks move toward the demonstrations
    errors = {r["epoch"]: r["train_action_mse_error"] for r in records if "train_action_mse_error" in r}
    assert sorted(errors) == [0, 5] and errors[5] < 0.5 * errors[0]
    lrs = [r["lr"] for r in records]
    assert lrs[4] == pytest.approx(1e-2) and lrs[0] < lrs[4] and lrs[-1] < 1e-5

    checkpoints = trained_run / "checkpoints"
    topk = sorted(p.name for p in checkpoints.iterdir() if TOPK_PATTERN.fullmatch(p.name))
    scored = {r["epoch"]: r["test/mean_score"] for r in records if "test/mean_score" in r}
    best_two = sorted(scored, key=scored.get)[-2:]
    assert topk == sorted(f"epoch={e:04d}-test_mean_score={scored[e]:.3f}.ckpt" for e in best_two)
    state = load_checkpoint(checkpoints / "latest.ckpt")
    assert state["epoch"] == 6 and state["global_step"] == len(records)
    assert {"policy", "ema", "optimizer", "lr_scheduler", "rng", "cfg"} <= set(state)
    # atomic writes leave no temporary files behind
    assert not [p for p in trained_run.rglob("*") if ".tmp" in p.name or ".old" in p.name]

    for name in ("best", "last"):
        export = trained_run / "pretrained" / name
        assert {"config.json", "model.safetensors", "train_config.yaml"} <= {p.name for p in export.iterdir()}
    last = TinyPolicy.from_pretrained(trained_run / "pretrained" / "last")
    for key, value in last.state_dict().items():
        torch.testing.assert_close(value, state["ema"]["model"][key], rtol=0, atol=0)
    assert (trained_run / "plots" / "training_curves.png").stat().st_size > 1000
    assert json.loads((trained_run / "run_info.json").read_text())["policy"] == "tiny_mlp"
    assert OmegaConf.load(trained_run / ".hydra" / "config.yaml").task.name == "tiny"


@pytest.mark.parametrize("policy", sorted(REAL_POLICIES))
def test_resume_repeats_an_uninterrupted_run(config_dir, zarr_path, tmp_path, policy):
    """The real policies draw noise in compute_loss, so this also checks that RNG states are restored."""
    common = ["training.num_epochs=3", "training.rollout_every=1", "training.checkpoint_every=1",
              "training.sample_every=1", "training.max_train_steps=3", "optimizer.lr=1e-3", "logging.plots=false"]
    straight = train(config_dir, zarr_path, tmp_path / "straight", *common, policy=policy)
    assert all(math.isfinite(r["train_action_mse_error"]) for r in epoch_lines(straight))
    # sampling for train_action_mse_error leaves the training random stream alone
    unsampled = train(config_dir, zarr_path, tmp_path / "unsampled", *common, "training.sample_every=100",
                      policy=policy)
    assert [r["train_loss"] for r in unsampled] == [r["train_loss"] for r in straight]

    # Interrupted during epoch 2's rollout: latest.ckpt holds the state after epoch 1.
    with pytest.raises(KeyboardInterrupt):
        train(config_dir, zarr_path, tmp_path / "resumed", *common, "+task.env_runner.crash_on_call=2", policy=policy)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.ckpt")["epoch"] == 2
    resumed = train(config_dir, zarr_path, tmp_path / "resumed", *common, policy=policy)

    assert len(resumed) == len(straight) == 9
    for a, b in zip(straight, resumed, strict=True):
        assert a == b  # every logged number, bitwise
    final = {name: load_checkpoint(tmp_path / name / "checkpoints" / "latest.ckpt") for name in ("straight", "resumed")}
    for key, value in final["straight"]["policy"].items():
        assert torch.equal(value, final["resumed"]["policy"][key]), key

    # the export holds the EMA weights and loads through the policy class's from_pretrained
    exported = BasePolicy.from_pretrained(tmp_path / "resumed" / "pretrained" / "last")
    for key, value in exported.state_dict().items():
        assert torch.equal(value, final["resumed"]["ema"]["model"][key]), key
    result = evaluate([f"checkpoint={tmp_path / 'resumed'}", "which=last", f"output_dir={tmp_path / 'eval'}"])
    assert len([key for key in result if "sim_max_reward" in key]) == 4


def test_existing_run_without_resume_is_refused(config_dir, zarr_path, trained_run):
    cfg = make_cfg(config_dir, zarr_path, trained_run, "training.resume=false")
    with pytest.raises(RunFolderError, match="already holds a run"):
        TrainWorkspace(cfg, trained_run).run()


def test_nan_loss_stops_with_step_epoch_and_batch_statistics(config_dir, zarr_path, tmp_path):
    # NaN from the 10th batch on (epoch 1): the epoch-0 checkpoint must survive untouched.
    run_dir = tmp_path / "nan_run"
    with pytest.raises(NonFiniteLossError, match=r"(?s)global step 9 \(epoch 1\).*obs \(32, 4, 4\): min"):
        train(config_dir, zarr_path, run_dir, "training.num_epochs=3", "training.checkpoint_every=1",
              "+policy.nan_after_calls=9", "logging.plots=false")
    assert load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["global_step"] == 7

    # Non-finite data is refused on load, before anything is written (tests/test_runs_nonfinite.py has more).
    bad_data = write_tiny_zarr(tmp_path / "nan.zarr", nan_obs=True)
    with pytest.raises(DataError, match=r"nan.zarr: key 'action' holds nan at episode 0, step 5"):
        train(config_dir, bad_data, tmp_path / "nan_data_run", "training.num_epochs=1")
    assert not (tmp_path / "nan_data_run").exists()


def test_config_contract_errors_name_the_missing_key(config_dir, zarr_path, tmp_path):
    cfg = make_cfg(config_dir, zarr_path, tmp_path / "r")
    OmegaConf.set_struct(cfg, False)
    del cfg.task["n_action_steps"]
    with pytest.raises(ConfigError, match=r"task.n_action_steps"):
        TrainWorkspace(cfg, tmp_path / "r")


def test_topk_keeps_the_best_k(tmp_path):
    topk = TopKCheckpoints(tmp_path / "ckpts", k=2)
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.4, 0.9, 0.7]):
        topk.save({"epoch": epoch}, epoch, score)
        topk.prune()
    assert sorted(p.name for p in topk.scores()) == ["epoch=0001-test_mean_score=0.700.ckpt",
                                                      "epoch=0004-test_mean_score=0.900.ckpt"]
    assert topk.best().name.startswith("epoch=0004")


# ---------------------------------------------------------------------------------------------- eval and report
def test_eval_command_on_run_export_and_checkpoint(trained_run, tmp_path, capsys):
    records = read_json_log(trained_run / "logs.json.txt")
    best = max(r["test/mean_score"] for r in records if "test/mean_score" in r)
    result = evaluate([f"checkpoint={trained_run}"])  # -> pretrained/best, the same 4 fake episodes
    assert result["test/mean_score"] == pytest.approx(best, abs=1e-6)
    saved = json.loads((trained_run / "eval" / "best" / "eval_log.json").read_text())
    assert saved["test/mean_score"] == result["test/mean_score"]
    out = capsys.readouterr().out
    assert "seed  100003" in out and "test/mean_score" in out

    latest = trained_run / "checkpoints" / "latest.ckpt"
    from_ckpt = evaluate([f"checkpoint={latest}", "n_test=6", f"output_dir={tmp_path / 'e'}"])
    from_last = evaluate([f"checkpoint={trained_run / 'pretrained' / 'last'}", "n_test=6",
                          f"output_dir={tmp_path / 'e2'}"])
    assert len([k for k in from_ckpt if "sim_max_reward" in k]) == 6
    assert from_ckpt["test/mean_score"] == pytest.approx(from_last["test/mean_score"], abs=1e-6)


@pytest.mark.parametrize("task_name", ["blockpush_lowdim", "kitchen_lowdim"])
def test_eval_bare_runner_keys_find_nested_episode_settings(task_name):
    """BlockPush and Kitchen take their episodes from a factory block: ``n_test=`` must reach it, not the runner."""
    cfg, _ = compose_train_config([f"task={task_name}", "method=drifting", "network=unet_lowdim"])
    cfg = apply_overrides(cfg, ["n_test=7", "test_start_seed=200000", "n_train=0", "n_envs=3"])
    runner = cfg.task.env_runner
    assert runner.n_envs == 3 and "n_test" not in runner
    episodes = instantiate(runner.episodes)
    assert [(e.prefix, e.seed) for e in episodes] == [("test", 200000 + i) for i in range(7)]
    with pytest.raises(ValueError, match="'n_tests' is nowhere in task.env_runner"):
        apply_overrides(cfg, ["n_tests=7"])
    two_blocks = OmegaConf.create({"env_fn": {"path": "a"}, "summarize": {"path": "b"}})
    with pytest.raises(ValueError, match="'path' is ambiguous: task.env_runner.env_fn.path, "):
        runner_key(two_blocks, "path")


def write_log(run_dir: Path, task: str, policy: str, scores: list[float]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run_info.json").write_text(json.dumps({"task": task, "policy": policy}))
    lines = []
    for i, score in enumerate(scores):
        lines.append({"train_loss": 1.0, "global_step": 2 * i, "epoch": i, "lr": 1e-4})
        lines.append({"train_loss": 0.5, "global_step": 2 * i + 1, "epoch": i, "lr": 1e-4, "val_loss": 0.6,
                      "test/mean_score": score})
    (run_dir / "logs.json.txt").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_report_arithmetic(tmp_path, capsys):
    a = [0.1, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.7]  # max 0.9, last 10 mean 0.52
    b = [0.3, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]  # max 0.6, last 10 mean 0.60
    write_log(tmp_path / "runs" / "d0", "pusht", "drifting", a)
    write_log(tmp_path / "runs" / "d1", "pusht", "drifting", b)
    write_log(tmp_path / "runs" / "p0", "pusht", "diffusion", [0.2, 0.4])  # fewer than 10: mean of all
    rows = report_main([str(tmp_path / "runs")])
    by_policy = {row["policy"]: row for row in rows}
    assert by_policy["drifting"]["runs"] == 2
    assert by_policy["drifting"]["max_mean"] == pytest.approx(0.75)
    assert by_policy["drifting"]["max_std"] == pytest.approx(0.15)
    assert by_policy["drifting"]["last_mean"] == pytest.approx(0.56)
    assert by_policy["drifting"]["last_std"] == pytest.approx(0.04)
    assert by_policy["diffusion"]["max_mean"] == pytest.approx(0.4)
    assert by_policy["diffusion"]["last_mean"] == pytest.approx(0.3)
    out = capsys.readouterr().out
    assert "0.750 ± 0.150" in out and "0.560 ± 0.040" in out


def test_rollouts_can_start_at_a_later_epoch(config_dir, zarr_path, tmp_path):
    records = train(config_dir, zarr_path, tmp_path / "run", *FAST, "training.num_epochs=4",
                    "training.max_train_steps=2", "training.rollout_every=2", "training.rollout_from_epoch=1")
    assert [r["epoch"] for r in records if "test/mean_score" in r] == [2, 3]  # not epoch 0; the last one always


# ---------------------------------------------------------------------------------------------- the command line
def test_cli_train_resume_report_and_eval(config_dir, zarr_path, tmp_path, monkeypatch, capsys):
    from drifting_policy import cli, config

    monkeypatch.setattr(config, "CONFIG_DIR", config_dir)
    run_dir = tmp_path / "cli_run"
    cli.main(["train", "task=tiny", *policy_overrides("tiny_mlp"), f"task.zarr_path={zarr_path}", f"run_dir={run_dir}",
              *FAST, "training.num_epochs=1", "training.max_train_steps=2", "training.rollout_every=1"])
    assert json.loads((run_dir / "run_info.json").read_text())["policy"] == "tiny_mlp_none"  # <method>_<network>
    # the saved config is reused when only run_dir (and overrides) are given; a setting train.yaml gained after the
    # run was saved (here: as if sample_every were new) takes its default
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    del saved.training.sample_every
    OmegaConf.save(saved, run_dir / ".hydra" / "config.yaml")
    cli.main(["train", f"run_dir={run_dir}", "training.num_epochs=2"])
    records = read_json_log(run_dir / "logs.json.txt")
    assert [r["epoch"] for r in records if "test/mean_score" in r] == [0, 1]
    assert OmegaConf.load(config_dir / "train.yaml").training.sample_every == 5
    assert [r["epoch"] for r in records if "train_action_mse_error" in r] == [0]  # epochs 0, 5, ... as train.yaml
    assert "Resumed" in capsys.readouterr().out

    cli.main(["report", str(run_dir)])
    assert re.search(r"tiny\s+tiny_mlp_none\s+1\s+2", capsys.readouterr().out)
    cli.main(["eval", f"checkpoint={run_dir}", "n_test=2"])
    assert json.loads((run_dir / "eval" / "best" / "eval_log.json").read_text())["task"] == "tiny"


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    from drifting_policy.cli import claim_new_dir

    base = str(tmp_path / "outputs" / "12.00.00_policy_task")
    claimed = [claim_new_dir(base) for _ in range(3)]
    assert claimed == [base, f"{base}_2", f"{base}_3"] and all(Path(p).is_dir() for p in claimed)


TASKS = [p.stem for p in sorted((CONFIG_DIR / "task").glob("*.yaml"))]


@pytest.mark.parametrize("task", TASKS)
def test_real_task_configs_meet_the_contract(task):
    """Every task in configs/task composes with train.yaml, a method and a network, and its nodes resolve."""
    network = "unet_image" if task.endswith("_image") else "unet_lowdim"
    cfg, _ = compose_train_config([f"task={task}", "method=drifting", f"network={network}"])
    check_train_config(cfg, source=f"configs/task/{task}.yaml")
    for node in ("dataset", "env_runner"):
        OmegaConf.to_container(cfg.task[node], resolve=True)
    policy_config = OmegaConf.to_container(cfg.policy, resolve=True)["config"]
    assert policy_config["horizon"] == cfg.task.horizon
