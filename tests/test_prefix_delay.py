"""Acting while the next chunk is computed: prefix conditioning, the simulated delay's bookkeeping, smoothness.

Servers listen on 127.0.0.1 with a free port; every loop is bounded in count and stops by itself.
"""
import numpy as np
import pytest
import torch

from drifting_policy.deploy.client import PolicyClient
from drifting_policy.deploy.export import export_policy, policy_spec
from drifting_policy.deploy.load import TorchBackend
from drifting_policy.deploy.onnx_policy import OnnxPolicy
from drifting_policy.deploy.runtime import ControlLoop, EpisodeResult, score_within, smoothness
from drifting_policy.deploy.server import LocalClient, PolicyServer
from drifting_policy.policies import DriftingPolicyConfig
from envs.bimodal.task import bimodal_batch, mode_chunks
from test_deploy import RUN_CFG, PlannerClient, StepCounterEnv, tiny_policy
from test_policy_api_synthetic import bimodal_modes


# ---------------------------------------------------------------------------------------------- the policy
def test_positions_under_the_prefix_get_no_drift():
    """Training puts the demonstrated prefix into every generated chunk: the network's outputs there get no
    gradient, every other position does; with max_prefix_delay = 0 every position does."""
    for D in (0, 3):
        policy = tiny_policy(max_prefix_delay=D).train()
        seen = {}

        def recording(cond, generator=None, noise=None, prefix=None, sample_chunk=policy.sample_chunk, seen=seen):
            out = sample_chunk(cond, generator, noise, prefix)
            out.retain_grad()
            seen.update(out=out, mask=None if prefix is None else prefix[1])
            return out

        policy.sample_chunk = recording
        torch.manual_seed(1)
        batch = {"obs": torch.randn(16, 2, 5), "action": torch.randn(16, 8, 2) * 80 + 250}
        loss, _ = policy(batch)
        loss.backward()
        moved = seen["out"].grad.abs().sum(-1) > 0  # (B * G, T)
        committed = torch.zeros_like(moved)
        if D:
            committed[:, 1:1 + D] = seen["mask"] > 0  # the prefix starts at index To - 1 = 1
            assert committed.any() and not committed.all()  # some rows have a prefix, some none
        assert not (moved & committed).any() and (moved | committed).all()


def test_prefix_length_follows_prefix_free_prob():
    """d = 0 with probability prefix_free_prob, else uniform on {1..D}; a probability outside [0, 1] is refused."""
    batch = {"obs": torch.randn(400, 2, 5), "action": torch.randn(400, 8, 2) * 80 + 250}
    for free_prob, expected_free in ((1.0, 1.0), (0.0, 0.0), (0.5, 0.5)):
        policy = tiny_policy(max_prefix_delay=3, prefix_free_prob=free_prob, n_generated=2)
        lengths = []
        policy.overwrite_prefix = lambda chunk, prefix, mask, lengths=lengths: lengths.append(mask.sum(1)) or chunk
        torch.manual_seed(0)
        policy(batch)
        d = lengths[0][::2]  # one row per observation (G = 2 copies each)
        assert abs(float((d == 0).float().mean()) - expected_free) < 0.08
        if free_prob < 1:
            counts = torch.bincount(d[d > 0].long(), minlength=4)[1:]
            assert counts.min() > 0.6 * counts.float().mean()  # 1, 2 and 3 about equally often
    with pytest.raises(ValueError, match=r"prefix_free_prob must be in \[0, 1\]"):
        DriftingPolicyConfig(obs_dim=5, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4,
                             max_prefix_delay=3, prefix_free_prob=1.5)


def test_prefix_is_continued_and_checked():
    policy = tiny_policy(max_prefix_delay=3)
    obs = {"obs": torch.randn(2, 2, 5)}
    prefix = torch.tensor([[[200.0, 210.0], [201.0, 211.0]]] * 2)
    out = policy.predict_action(obs, prefix=prefix)
    torch.testing.assert_close(out["action"][:, :2], prefix)  # executed from index To - 1: the prefix first
    # A prefix of 0 .. D actions is allowed; more, or one to a policy trained without, is refused.
    assert policy.predict_action(obs, prefix=torch.zeros(2, 0, 2))["action"].shape == (2, 4, 2)
    with pytest.raises(ValueError, match=r"prefix must be \(B=2, d <= 3, 2\)"):
        policy.predict_action(obs, prefix=torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="not trained to continue a prefix"):
        tiny_policy().predict_action(obs, prefix=prefix)
    with pytest.raises(ValueError, match="max_prefix_delay must be in"):
        DriftingPolicyConfig(obs_dim=5, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, max_prefix_delay=7)


def test_onnx_and_server_continue_the_prefix_as_torch_does(tmp_path):
    policy = tiny_policy("transformer", max_prefix_delay=3)
    spec = policy_spec(policy, RUN_CFG, "toy")
    onnx_policy = OnnxPolicy(export_policy(policy, spec, tmp_path / "toy.onnx"))
    obs = np.random.default_rng(0).standard_normal((1, 2, 5)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal((1, 8, 2)).astype(np.float32)
    prefix = np.array([[[240.0, 260.0], [241.0, 259.0]]], np.float32)
    expected = policy.predict_action({"obs": torch.from_numpy(obs)}, noise={"noise": torch.from_numpy(noise)},
                                     prefix=torch.from_numpy(prefix))["action_pred"][:, 1:].numpy()
    np.testing.assert_allclose(onnx_policy.predict({"obs": obs}, {"noise": noise}, prefix), expected, atol=1e-3)
    with PolicyServer(TorchBackend(policy), spec, port=0, quiet=True).start_in_thread() as handle, \
            PolicyClient(handle.uri) as client:
        reply = client.infer({"obs": obs[0], "noise": noise[0], "prefix": prefix[0], "action_steps": 7})
        np.testing.assert_allclose(reply["actions"], expected[0], atol=1e-3)
        for bad, message in (({"prefix": np.zeros((4, 2), np.float32)}, "continues at most 3"),
                             ({"action_steps": 8}, r"'action_steps' must be an int in \[1, 7\]")):
            with pytest.raises(RuntimeError, match=message):
                client.infer({"obs": obs[0], **bad})
        assert client.infer({"obs": obs[0]})["actions"].shape == (4, 2)  # and it keeps serving
    with pytest.raises(ValueError, match="not trained to continue a prefix"):
        LocalClient(TorchBackend(tiny_policy()), policy_spec(tiny_policy(), RUN_CFG, "toy")).infer(
            {"obs": obs[0], "prefix": prefix[0]})


def test_a_prefix_policy_continues_the_mode_it_is_given():
    """The bimodal task: without a prefix both modes come out; given two actions of one mode, the chunk continues
    that mode (a plain policy's hand-over picks either)."""
    policy = bimodal_modes.make_bimodal_policy(max_prefix_delay=2)
    bimodal_modes.train_bimodal(policy, 300, batch_size=32)
    policy.eval()
    n = 256
    obs = torch.linspace(-1, 1, n)
    modes = mode_chunks(obs, 8)  # (N, 2, T, 2): [up-right, down-left]
    generator = torch.Generator().manual_seed(0)
    free = policy.predict_action({"obs": obs[:, None, None]}, generator=generator)["action_pred"]
    free_up = float(((free - modes[:, 0]).square().sum(-1).mean(-1) < (free - modes[:, 1]).square().sum(-1)
                     .mean(-1)).float().mean())
    assert 0.2 < free_up < 0.8, free_up
    for mode in (0, 1):
        chunk = policy.predict_action({"obs": obs[:, None, None]}, generator=generator,
                                      prefix=modes[:, mode, :2])["action_pred"]
        tail_distance = (chunk[:, None, 2:] - modes[:, :, 2:]).square().sum(-1).mean(-1)  # (N, 2)
        follows = float((tail_distance.argmin(dim=1) == mode).float().mean())
        assert follows > 0.95, (mode, follows)
    assert bimodal_batch(1)["action"].shape == (1, 8, 2)


# ---------------------------------------------------------------------------------------------- the runtime
class ContinuingPlanner(PlannerClient):
    """A PlannerClient that records requests and, like a prefix policy, starts its chunk with the prefix."""

    def __init__(self, spec):
        super().__init__(spec, delay=0.0)
        self.requests = []

    def infer(self, request):
        self.requests.append(request)
        actions = super().infer(request)["actions"]
        prefix = request.get("prefix", np.zeros((0, 2)))
        actions[: len(prefix)] = prefix
        return {"actions": actions}


@pytest.mark.parametrize("delay", [0, 2, 3])
def test_prefix_mode_sends_what_runs_while_the_request_is_in_flight(delay):
    policy = tiny_policy(max_prefix_delay=3)
    spec = policy_spec(policy, RUN_CFG, "toy")
    client, env = ContinuingPlanner(spec), StepCounterEnv(30)
    result = ControlLoop(client, mode="prefix", delay_steps=delay).run_episode(env, seed=0)
    assert env.actions == list(range(30)) and result.underruns == 0
    for request in client.requests[1:]:  # made at step k: the queued actions for steps k .. k + d - 1
        k = request["obs"][-1, 0]
        np.testing.assert_array_equal(request["prefix"][:, 0], k + np.arange(delay))
    # Requests every Ta = 4 steps; each later chunk's first d actions were executed from the old one (dropped).
    assert [r["obs"][-1, 0] for r in client.requests] == [0, 4, 8, 12, 16, 20, 24, 28][: len(client.requests)]
    assert result.dropped_actions == delay * (result.chunks - 1)
    assert result.handovers == [0, *range(4 + delay, 30, 4)][: result.chunks]
    with pytest.raises(ValueError, match="mode 'prefix' needs a policy trained with max_prefix_delay"):
        ControlLoop(client=PlannerClient(policy_spec(tiny_policy(), RUN_CFG, "toy"), 0.0), mode="prefix")


def test_sync_mode_idles_and_the_wall_time_budget_counts_it():
    spec = policy_spec(tiny_policy(), RUN_CFG, "toy")
    env = StepCounterEnv(12)
    result = ControlLoop(PlannerClient(spec, 0.0), mode="sync", delay_steps=2).run_episode(env, seed=0)
    assert env.actions == list(range(12)) and result.idle_steps == 2 * 3
    assert result.idle_before == [2] * 4 + [4] * 4 + [6] * 4
    result.rewards = [float(i) for i in range(12)]
    assert score_within(result, 12) == 7.0  # step t ran at wall step t + idle: 7 + 4 = 11 < 12, 8 + 6 = 14
    assert score_within(result, 100) == 11.0


def test_smoothness_measures_jerk_and_hand_over_jumps():
    actions = [np.array([float(t), 0.0]) for t in range(8)]
    actions[4] = np.array([7.0, 0.0])  # a chunk taking over at step 4 jumps by 4 (steps are 1 elsewhere)
    result = EpisodeResult(seed=0, score=0.0, steps=8, deadline_misses=0, underruns=0, dropped_actions=0, chunks=2,
                           actions=actions, handovers=[0, 4])
    motion = smoothness(result)
    assert motion["max_handover_jump"] == 4.0 and motion["mean_handover_jump"] == 4.0
    assert motion["mean_step"] == pytest.approx((5 * 1 + 4 + 2) / 7)
    third = np.diff(np.stack(actions)[:, 0], n=3)
    assert motion["mean_squared_jerk"] == pytest.approx(np.mean(third ** 2)) and motion["mean_squared_jerk"] > 0
    smooth = smoothness(EpisodeResult(0, 0.0, 8, 0, 0, 0, 2, actions=[np.array([float(t)]) for t in range(8)],
                                      handovers=[0, 4]))
    assert smooth["mean_squared_jerk"] == 0.0 and smooth["max_handover_jump"] == 1.0
