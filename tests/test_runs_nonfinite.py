"""Non-finite values are caught where they enter (issue 23): data on load, weights on load, observations in
predict_action / select_action (a refused call is not sticky), the drifting loss's inputs, actions in evaluation,
and a NaN training loss names its cause."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from drifting import drift_loss, feature_drift_loss
from drifting.checkpoint import CheckpointError
from drifting.checkpoint import load as load_checkpoint
from drifting_policy.data import ReplayBuffer, RobomimicReader, write_robomimic_hdf5
from drifting_policy.data.dataset import SequenceDataset
from drifting_policy.errors import DataError
from drifting_policy.evaluate import evaluate
from drifting_policy.normalizer import LinearNormalizer, SingleFieldLinearNormalizer
from drifting_policy.policies import BasePolicy, DriftingPolicy, DriftingPolicyConfig
from drifting_policy.workspace import NonFiniteLossError
from envs.common.runner import Episode, VectorEnvRunner
from test_env_runner import ScriptedRewardEnv
from test_policy_api import OBS_DIM, TA, TO, make_policy
from test_policy_data_robomimic import ENV_ARGS, make_demo
from test_policy_training import config_dir, train, zarr_path  # noqa: F401  (fixtures)


# ---------------------------------------------------------------------------------------------- data
def buffer_with(value: float, key: str, episode: int, step: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create_empty()
    for i in range(5):
        frames = {"obs": rng.normal(size=(10, 4)).astype(np.float32),
                  "action": rng.normal(size=(10, 2)).astype(np.float32)}
        if i == episode:
            frames[key][step, 1] = value
        buffer.add_episode(frames)
    return buffer


@pytest.mark.parametrize("value, key", [(np.nan, "action"), (np.inf, "obs"), (-np.inf, "action")])
def test_a_dataset_with_one_non_finite_value_is_refused_naming_key_episode_and_step(tmp_path, value, key):
    path = buffer_with(value, key, episode=3, step=7).save_to_path(tmp_path / "data.zarr")
    with pytest.raises(DataError, match=rf"data.zarr: key '{key}' holds {value} at episode 3, step 7"):
        SequenceDataset(path, horizon=4, obs_keys=["obs"])


def test_a_robomimic_file_with_a_nan_names_the_demo_and_step(tmp_path):
    rng = np.random.default_rng(0)
    demos = [make_demo(rng, length) for length in (5, 4, 6)]
    demos[1]["obs"]["object"][2, 0] = np.nan
    path = write_robomimic_hdf5(tmp_path / "low_dim.hdf5", demos, ENV_ARGS)
    with pytest.raises(DataError, match=r"low_dim.hdf5: data/demo_1/obs/object holds nan at step 2"):
        RobomimicReader(path).to_replay_buffer(["object", "robot0_eef_pos"])


def test_the_normalizer_refuses_to_fit_non_finite_data():
    data = torch.randn(100, 3)
    data[40, 1] = float("inf")
    with pytest.raises(ValueError, match=r"holding 1 NaN or inf value\(s\) of 300"):
        LinearNormalizer().fit({"obs": data})


def test_a_nan_training_loss_names_the_normalizer(config_dir, zarr_path, tmp_path, monkeypatch):  # noqa: F811
    fitted = SequenceDataset.get_normalizer

    def broken_normalizer(self):
        normalizer = fitted(self)
        normalizer["obs"] = SingleFieldLinearNormalizer(torch.full((4,), float("nan")), torch.zeros(4))
        return normalizer

    monkeypatch.setattr(SequenceDataset, "get_normalizer", broken_normalizer)
    with pytest.raises(NonFiniteLossError, match=r"global step 0 \(epoch 0\): the policy's normalizer holds "
                                                 r"non-finite values \(normalizer.params_dict.obs.scale\)"):
        train(config_dir, zarr_path, tmp_path / "run", "training.num_epochs=1")


# ---------------------------------------------------------------------------------------------- observations
def test_predict_action_refuses_non_finite_observations():
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {}).eval()
    obs = torch.randn(3, TO, OBS_DIM)
    obs[2, 1, 4] = float("inf")
    with pytest.raises(ValueError, match=r"observation 'obs' holds inf at index \[2, 1, 4\] \(batch, step, ...\)"):
        policy.predict_action({"obs": obs})
    later = torch.randn(3, TO + 2, OBS_DIM)
    later[:, TO:] = float("nan")  # steps beyond To are not read
    assert torch.isfinite(policy.predict_action({"obs": later})["action"]).all()


def test_select_action_refuses_a_bad_step_and_is_not_poisoned_by_it():
    steps = torch.randn(2 * TA, 3, OBS_DIM)
    bad = steps[3].clone()
    bad[1, 0] = float("nan")

    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {}).eval()
    torch.manual_seed(0)
    clean = [policy.select_action(step) for step in steps]

    policy.reset()
    torch.manual_seed(0)
    actions = []
    for i, step in enumerate(steps):
        if i == 3:
            with pytest.raises(ValueError, match=r"observation 'obs' holds nan at index \[1, 0\] \(batch, ...\)"):
                policy.select_action(bad)
        actions.append(policy.select_action(step))
    for a, b in zip(actions, clean, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_select_action_refuses_another_batch_size_without_reset():
    policy = make_policy(DriftingPolicy, DriftingPolicyConfig, {}).eval()
    policy.select_action(torch.randn(3, OBS_DIM))
    with pytest.raises(ValueError, match="got a batch of 2 after batches of 3; call reset"):
        policy.select_action(torch.randn(2, OBS_DIM))
    policy.reset()
    assert policy.select_action(torch.randn(2, OBS_DIM)).shape == (2, 2)


# ---------------------------------------------------------------------------------------------- weights
def test_flipped_bytes_in_model_safetensors_are_refused_naming_file_and_tensor(tmp_path):
    make_policy(DriftingPolicy, DriftingPolicyConfig, {}).save_pretrained(tmp_path / "export")
    weights = tmp_path / "export" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"  # the last float32 of the last tensor becomes NaN
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: weights '.+' hold 1 non-finite value\(s\)"):
        BasePolicy.from_pretrained(tmp_path / "export")
    weights.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        BasePolicy.from_pretrained(tmp_path / "export")


def test_eval_refuses_a_checkpoint_with_nan_weights(config_dir, zarr_path, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(config_dir, zarr_path, run, "training.num_epochs=1", "training.max_train_steps=2", "logging.plots=false")
    state = load_checkpoint(run / "checkpoints" / "latest.ckpt")
    state["ema"]["model"]["net.2.bias"][0] = float("nan")
    damaged = tmp_path / "damaged.ckpt"
    torch.save(state, damaged)
    with pytest.raises(CheckpointError, match=r"damaged.ckpt: weights 'net.2.bias' hold 1 non-finite value"):
        evaluate([f"checkpoint={damaged}", f"output_dir={tmp_path / 'eval'}"])
    truncated = tmp_path / "truncated.ckpt"
    shutil.copyfile(run / "checkpoints" / "latest.ckpt", truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated.ckpt: not a readable checkpoint"):
        evaluate([f"checkpoint={truncated}", f"output_dir={tmp_path / 'eval'}"])
    assert not (tmp_path / "eval" / "eval_log.json").exists()


# ---------------------------------------------------------------------------------------------- actions
class NanPolicy:
    """Acts NaN for the second env of the vector env, as a policy with damaged weights would."""

    def predict_action(self, obs_dict):
        action = torch.zeros(len(obs_dict["obs"]), 2, 1)
        action[1] = float("nan")
        return {"action": action}


def test_evaluation_stops_on_non_finite_actions_instead_of_scoring_them():
    episodes = [Episode("test", 100000 + i) for i in range(3)]
    runner = VectorEnvRunner(ScriptedRewardEnv, episodes, n_obs_steps=2, n_action_steps=2, vectorization="sync",
                             show_progress=False)
    try:
        with pytest.raises(FloatingPointError, match=r"non-finite actions \(NaN or inf\) in test seed 100001; "
                                                     r"stopped without a score"):
            runner.run(NanPolicy())
    finally:
        runner.close()


# ---------------------------------------------------------------------------------------------- the drifting loss
def test_drift_loss_names_the_input_and_group_with_non_finite_values():
    gen, pos = torch.randn(4, 8, 3, requires_grad=True), torch.randn(4, 2, 3)
    loss, _ = drift_loss(gen, pos)
    assert torch.isfinite(loss).all()
    pos[2, 1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite values in pos \(1 of 24 values, in group\(s\) \[2\]\); "
                                                 r"every group's loss would be NaN"):
        drift_loss(gen, pos)
    with pytest.raises(FloatingPointError, match=r"feature 'step': drift_loss: non-finite values in pos"):
        feature_drift_loss({"step": gen}, {"step": pos})


def test_drift_loss_under_vmap_leaves_the_check_to_the_caller():
    """The drifting policy's per-observation calls run under vmap, where no value may steer Python."""
    gen, pos = torch.randn(4, 8, 3), torch.randn(4, 2, 3)
    pos[2, 1, 0] = float("nan")
    loss, _ = torch.func.vmap(lambda g, p: drift_loss(g[None], p[None]))(gen, pos)
    assert torch.isfinite(loss[[0, 1, 3]]).all() and torch.isnan(loss[2]).all()
