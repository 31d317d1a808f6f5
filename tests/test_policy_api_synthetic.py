"""The synthetic bimodal task: the data, the metric, and whether trained policies keep both modes."""
import types

import pytest
import torch

from drifting_policy.synthetic import bimodal_batch, evaluate_bimodal, mode_chunks, run


def test_bimodal_demonstrations():
    batch = bimodal_batch(4000, horizon=8, generator=torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (4000, 1, 1) and batch["action"].shape == (4000, 8, 2)
    end = batch["action"][:, -1]
    up_right = (end > 0).all(dim=1)
    assert ((end < 0).all(dim=1) | up_right).all()  # every demonstration is one of the two lines
    assert 0.47 < up_right.float().mean() < 0.53
    length = end.norm(dim=1)
    torch.testing.assert_close(length, 0.5 + batch["obs"][:, 0, 0].abs())


class FixedChunks:
    """Stands in for a policy: returns the up-right mode, the down-left mode and the mean of both, in turn."""

    config = types.SimpleNamespace(horizon=8)

    def eval(self):
        return self

    def predict_action(self, obs_dict, generator=None):
        obs = obs_dict["obs"][:, 0, 0]
        modes = mode_chunks(obs, 8)
        choice = torch.arange(len(obs)) % 3
        chunks = torch.where((choice == 2)[:, None, None], modes.mean(dim=1), modes[torch.arange(len(obs)), choice % 2])
        return {"action_pred": chunks}


def test_metric_counts_modes_and_misses():
    result = evaluate_bimodal(FixedChunks(), n_obs=30, samples_per_obs=1)
    assert result == pytest.approx({"on_mode": 2 / 3, "up_right": 1 / 3, "down_left": 1 / 3,
                                    "mean_distance": result["mean_distance"]})


@pytest.mark.slow
@pytest.mark.parametrize("method, steps, eval_every, ema", [
    ("drifting", 300, 100, False),
    ("diffusion", 4000, 2000, True),
])
def test_policy_keeps_both_modes(method, steps, eval_every, ema):
    """The runs of `python -m drifting_policy.synthetic` (default config of each method, UNet (32, 64))."""
    result = run(method, steps, batch_size=32, eval_every=eval_every, label=method, down_dims=(32, 64), ema=ema)
    assert result["on_mode"] >= 0.7, result
    assert min(result["up_right"], result["down_left"]) >= 0.25, result
