"""Reproducible evaluation (issue 23): `eval` and in-training rollouts seed the policy's sampling noise, so the same
checkpoint, seed and episodes give the same score; the seed is logged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from drifting.json_log import read_json_log
from drifting_policy.evaluate import evaluate
from test_policy_training import config_dir, train, zarr_path  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def drifting_run(config_dir, zarr_path, tmp_path_factory) -> Path:  # noqa: F811
    """The real drifting policy (its actions depend on the noise it draws), one short epoch."""
    run_dir = tmp_path_factory.mktemp("runs") / "drifting"
    train(config_dir, zarr_path, run_dir, "training.num_epochs=1", "training.max_train_steps=2",
          "training.rollout_seed=7", "logging.plots=false", policy="drifting_tiny")
    return run_dir


def score(run_dir: Path, tmp_path: Path, *options: str) -> dict:
    return evaluate([f"checkpoint={run_dir}", "which=last", f"output_dir={tmp_path / 'eval'}", *options])


def test_the_same_seed_gives_the_same_score(drifting_run, tmp_path):
    first, again = score(drifting_run, tmp_path, "seed=3"), score(drifting_run, tmp_path, "seed=3")
    other = score(drifting_run, tmp_path, "seed=4")
    assert first["test/mean_score"] == again["test/mean_score"]
    assert other["test/mean_score"] != first["test/mean_score"]
    assert json.loads((tmp_path / "eval" / "eval_log.json").read_text())["seed"] == 4


def test_eval_defaults_to_the_runs_rollout_seed_and_repeats_its_last_score(drifting_run, tmp_path, capsys):
    [logged] = [r for r in read_json_log(drifting_run / "logs.json.txt") if "test/mean_score" in r]
    assert logged["rollout_seed"] == 7
    result = score(drifting_run, tmp_path)
    assert result["seed"] == 7 and result["test/mean_score"] == logged["test/mean_score"]
    assert "seed: 7 (the policy's sampling noise" in capsys.readouterr().out
