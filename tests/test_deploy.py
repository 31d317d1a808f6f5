"""Deployment: one-graph export, the ONNX policy, the wire format, the policy server and the control runtime.

Servers listen on 127.0.0.1 with a free port; every loop is bounded in count and stops by itself.
"""
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from openpi_client import msgpack_numpy as openpi_msgpack
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from drifting_policy.deploy import wire
from drifting_policy.deploy.best_of_n import choose_consistent
from drifting_policy.deploy.client import PolicyClient
from drifting_policy.deploy.export import check_parity, export_policy, policy_spec, read_pt2_spec
from drifting_policy.deploy.load import TorchBackend
from drifting_policy.deploy.onnx_policy import OnnxPolicy
from drifting_policy.deploy.runtime import ChunkQueue, ControlLoop
from drifting_policy.deploy.server import PolicyServer
from drifting_policy.deploy.spec import ObservationError, PolicySpec, check_batch, example_inputs
from drifting_policy.normalizer import LinearNormalizer, get_image_range_normalizer
from drifting_policy.policies import DriftingPolicy, DriftingPolicyConfig

TINY = dict(horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), diffusion_step_embed_dim=16,
            n_layer=1, n_head=2, n_emb=32, p_drop_attn=0.0)
RUN_CFG = OmegaConf.create({"task": {"name": "toy", "env_runner": {"fps": 10}}})


def tiny_policy(kind: str = "unet", **config) -> DriftingPolicy:
    """A tiny drifting policy of ``kind`` (unet, transformer, image); ``config``: DriftingPolicyConfig fields."""
    torch.manual_seed(0)
    options = dict(TINY, backbone="transformer" if kind == "transformer" else "unet", action_dim=2, **config)
    normalizer = LinearNormalizer()
    # Actions in the hundreds, like PushT's pixels: the parity check must hold at that scale.
    fit = {"action": torch.randn(200, 2) * 80 + 250}
    if kind == "image":
        options.update(shape_meta={"obs": {"image": {"shape": [3, 32, 32], "type": "rgb"},
                                           "agent_pos": {"shape": [2], "type": "low_dim"}}}, crop_shape=(28, 28))
        fit["agent_pos"] = torch.randn(200, 2) * 50
    else:
        options["obs_dim"] = 5
        fit["obs"] = torch.randn(200, 5) * 3
    normalizer.fit(fit)
    if kind == "image":
        normalizer["image"] = get_image_range_normalizer()
    policy = DriftingPolicy(DriftingPolicyConfig(**options))
    policy.set_normalizer(normalizer)
    return policy.eval()


@pytest.fixture(scope="module")
def lowdim():
    policy = tiny_policy()
    return policy, policy_spec(policy, RUN_CFG, "toy")


@pytest.fixture(scope="module")
def lowdim_onnx(lowdim, tmp_path_factory):
    policy, spec = lowdim
    return export_policy(policy, spec, tmp_path_factory.mktemp("onnx") / "toy.onnx")


@pytest.fixture()
def server(lowdim):
    policy, spec = lowdim
    with PolicyServer(TorchBackend(policy), spec, port=0, quiet=True).start_in_thread() as handle:
        yield handle


# ---------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("kind, prefix", [("unet", 0), ("transformer", 3), ("image", 0), ("unet", 3)])
def test_export_is_one_graph_that_matches_torch(kind, prefix, tmp_path):
    """Observations, noise (and for a prefix policy the padded prefix and its mask, random lengths per row) in,
    the chunk from the current step out, as torch computes it."""
    policy = tiny_policy(kind, extra_noise_dim=3 if kind == "transformer" else 0, max_prefix_delay=prefix)
    spec = policy_spec(policy, RUN_CFG, kind)
    for fmt in ("onnx", "pt2"):
        path = export_policy(policy, spec, tmp_path / f"{kind}.{fmt}", fmt)
        # Batches of 1 and 3 through one file: the batch axis is dynamic.
        _, normalized = check_parity(policy, spec, path)
        assert normalized <= 1e-4, (fmt, normalized)
    assert [p.name for p in sorted(tmp_path.iterdir())] == [f"{kind}.onnx", f"{kind}.pt2"]  # no temporary files
    onnx_policy = OnnxPolicy(tmp_path / f"{kind}.onnx")
    assert onnx_policy.spec == spec == read_pt2_spec(tmp_path / f"{kind}.pt2")
    assert onnx_policy.input_names == [*spec.observation, *spec.noise, *(["prefix", "prefix_mask"] if prefix else [])]
    expected_noise = {"noise": [8, 2]} | ({"extra_noise": [3]} if kind == "transformer" else {})
    assert spec.noise == expected_noise and spec.control_rate_hz == 10 and spec.action["shape"] == [4, 2]
    assert spec.max_prefix_steps == prefix and spec.chunk_steps == 7


def test_spec_records_shapes_bounds_and_rate(lowdim):
    policy, spec = lowdim
    assert spec.observation == {"obs": {"shape": [5], "dtype": "float32", "type": "low_dim"}}
    stats = policy.normalizer["action"].get_input_stats()
    np.testing.assert_allclose(spec.action["low"], stats["min"].numpy())
    assert PolicySpec.from_json(spec.to_json()) == spec
    with pytest.raises(KeyError, match="control rate"):
        policy_spec(policy, OmegaConf.create({"task": {"name": "x", "env_runner": {}}}), "x")


def test_onnx_policy_runs_without_torch(lowdim_onnx):
    script = (
        "import sys, numpy as np\n"
        "from drifting_policy.deploy.onnx_policy import OnnxPolicy\n"
        f"policy = OnnxPolicy({str(lowdim_onnx)!r}, seed=0)\n"
        "action = policy.predict_action({'obs': np.zeros((3, 2, 5), np.float32)})['action']\n"
        "assert action.shape == (3, 4, 2) and np.isfinite(action).all()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_onnx_policy_predicts_what_torch_predicts_for_the_same_noise(lowdim, lowdim_onnx):
    policy, spec = lowdim
    onnx_policy = OnnxPolicy(lowdim_onnx)
    inputs = example_inputs(spec, 4, seed=3)
    got = onnx_policy.predict_action({"obs": inputs["obs"]}, noise={"noise": inputs["noise"]})["action"]
    expected = policy.predict_action({"obs": torch.from_numpy(inputs["obs"])},
                                     noise={"noise": torch.from_numpy(inputs["noise"])})["action"].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)  # pixel-scale actions: ~1e-6 relative


def test_onnx_select_action_queues_like_the_torch_policy(lowdim_onnx):
    policy = OnnxPolicy(lowdim_onnx, seed=0)
    calls = []
    run = policy.run
    policy.run = lambda inputs: calls.append(inputs["obs"].copy()) or run(inputs)
    steps = [np.full((2, 5), float(i), np.float32) for i in range(6)]
    actions = [policy.select_action({"obs": step}) for step in steps]
    assert [a.shape for a in actions] == [(2, 2)] * 6
    assert len(calls) == 2  # a chunk every Ta = 4 calls
    np.testing.assert_array_equal(calls[0][:, 0], calls[0][:, 1])  # the first observation repeated
    np.testing.assert_array_equal(calls[1][:, :, 0], [[3, 4], [3, 4]])  # then the last To steps
    queued = [a.tolist() for a in policy._queues.actions]
    with pytest.raises(ObservationError, match="non-finite"):
        policy.select_action({"obs": np.full((2, 5), np.nan, np.float32)})
    with pytest.raises(ValueError, match="got a batch of 3 after batches of 2; call reset"):
        policy.select_action({"obs": np.zeros((3, 5), np.float32)})
    assert [a.tolist() for a in policy._queues.actions] == queued  # a bad call changes nothing
    policy.reset()
    assert policy.select_action({"obs": np.zeros((3, 5), np.float32)}).shape == (3, 2)


def test_check_batch_names_what_was_expected(lowdim):
    _, spec = lowdim
    good = example_inputs(spec, 2)
    cases = [({}, "missing \\['obs'\\]"), ({**good, "extra": good["obs"]}, "unknown \\['extra'\\]"),
             ({"obs": good["obs"][:, :1]}, r"must have shape \(B, 2, 5\); got \(2, 1, 5\)"),
             ({"obs": good["obs"].astype(np.int32)}, "must be float32"),
             ({"obs": good["obs"], "noise": good["noise"][:1]}, "same batch size")]
    for inputs, message in cases:
        with pytest.raises(ObservationError, match=message):
            check_batch(spec, inputs)


# ---------------------------------------------------------------------------------------------- wire format
def test_wire_format_round_trips_with_openpi_client():
    message = {"obs": np.arange(12, dtype=np.float32).reshape(3, 4), "flag": np.bool_(True), "count": np.int64(7),
               "nested": {"x": np.zeros((0, 2), np.uint8), "text": "hi", "number": 1.5}}
    for encode, decode in ((wire.packb, openpi_msgpack.unpackb), (openpi_msgpack.packb, wire.unpackb)):
        decoded = decode(encode(message))
        np.testing.assert_array_equal(decoded["obs"], message["obs"])
        assert decoded["obs"].dtype == np.float32 and decoded["count"] == 7 and decoded["nested"]["text"] == "hi"
        assert decoded["nested"]["x"].shape == (0, 2)
    assert wire.unpackb(openpi_msgpack.packb(message))["obs"].flags.writeable  # openpi's own are read-only


def array_map(data: bytes, dtype: str, shape) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


BAD_MESSAGES = {
    "garbage bytes": b"\xc1\xff\x00garbage",
    "truncated": msgpack.packb({"obs": [1, 2, 3]})[:-2],
    "object dtype": msgpack.packb({"obs": array_map(b"\0" * 8, "|O", [1])}),
    "complex dtype": msgpack.packb({"obs": array_map(b"\0" * 16, "<c16", [1])}),
    "void dtype": msgpack.packb({"obs": array_map(b"\0" * 4, "|V4", [1])}),
    "bytes do not match shape": msgpack.packb({"obs": array_map(b"\0" * 12, "<f4", [2, 5])}),
    "negative shape": msgpack.packb({"obs": array_map(b"", "<f4", [-1])}),
    "extension type": msgpack.packb({"obs": msgpack.ExtType(42, b"x")}),
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_wire_refuses_malformed_messages(name):
    with pytest.raises(wire.WireError):
        wire.unpackb(BAD_MESSAGES[name])


# ---------------------------------------------------------------------------------------------- server
def test_openpi_client_gets_actions_from_our_server(lowdim):
    policy, spec = lowdim
    with PolicyServer(TorchBackend(policy), spec, port=0, api_key="secret", quiet=True).start_in_thread() as handle:
        client = WebsocketClientPolicy("127.0.0.1", handle.port, api_key="secret")
        metadata = client.get_server_metadata()
        assert metadata["n_obs_steps"] == 2 and metadata["action"]["shape"] == [4, 2]
        inputs = example_inputs(spec, 1, seed=5)
        request = {"obs": inputs["obs"][0], "noise": inputs["noise"][0]}
        reply = client.infer(request)
        expected = policy.predict_action({"obs": torch.from_numpy(inputs["obs"])},
                                         noise={"noise": torch.from_numpy(inputs["noise"])})["action"][0]
        np.testing.assert_allclose(reply["actions"], expected.numpy(), rtol=0, atol=1e-4)
        assert set(reply["policy_timing"]) == {"infer_ms"}
        assert set(reply["server_timing"]) == {"infer_ms", "queue_ms", "prev_total_ms"}
        with pytest.raises(RuntimeError, match=r"'obs' must have shape \(2, 5\)"):
            client.infer({"obs": np.zeros((3, 5), np.float32)})
        # openpi's broker calls the server once per chunk and hands out one action per call.
        broker = ActionChunkBroker(client, action_horizon=4)
        served = [broker.infer(request)["actions"] for _ in range(8)]
        assert [a.shape for a in served] == [(2,)] * 8
        np.testing.assert_allclose(np.stack(served[:4]), reply["actions"], rtol=0, atol=1e-4)


def test_one_step_requests_keep_a_history_per_connection(server, lowdim):
    policy, spec = lowdim
    inputs = example_inputs(spec, 1, seed=1)
    noise = inputs["noise"][0]
    first, second = inputs["obs"][0, 0], inputs["obs"][0, 1]

    def expected(o1, o2):
        obs = torch.from_numpy(np.stack([o1, o2])[None])
        return policy.predict_action({"obs": obs}, noise={"noise": torch.from_numpy(noise[None])})["action"][0]

    with PolicyClient(server.uri) as client, PolicyClient(server.uri) as other:
        np.testing.assert_allclose(client.infer({"obs": first, "noise": noise})["actions"], expected(first, first),
                                   atol=1e-4)  # the first step repeated
        other.infer({"obs": second, "noise": noise})  # another connection has its own history
        np.testing.assert_allclose(client.infer({"obs": second, "noise": noise})["actions"],
                                   expected(first, second), atol=1e-4)
        with pytest.raises(RuntimeError, match="non-finite"):
            client.infer({"obs": np.full(5, np.nan, np.float32)})  # refused, and not pushed into the history
        np.testing.assert_allclose(client.infer({"obs": second, "noise": noise})["actions"],
                                   expected(second, second), atol=1e-4)
        np.testing.assert_allclose(client.infer({"obs": first, "noise": noise, "reset": True})["actions"],
                                   expected(first, first), atol=1e-4)


def test_authentication_is_checked_at_the_handshake(lowdim):
    policy, spec = lowdim
    with PolicyServer(TorchBackend(policy), spec, port=0, api_key="k3y", quiet=True).start_in_thread() as handle:
        for headers in (None, {"Authorization": "Api-Key wrong"}, {"Authorization": "k3y"}):
            with pytest.raises(InvalidStatus) as refused:
                connect(handle.uri, additional_headers=headers, proxy=None)
            assert refused.value.response.status_code == 401
        with pytest.raises(PermissionError, match="missing or wrong API key"):
            PolicyClient(handle.uri, api_key="wrong")
        with PolicyClient(handle.uri, api_key="k3y") as client:
            assert client.infer({"obs": np.zeros((2, 5), np.float32)})["actions"].shape == (4, 2)
        # The health check needs no key.
        assert urllib.request.urlopen(f"http://127.0.0.1:{handle.port}/healthz", timeout=10).status == 200


class BlockingBackend:
    """Warm-up and every request wait until ``release`` is set."""

    def __init__(self, inner):
        self.inner, self.release, self.entered = inner, threading.Event(), threading.Event()

    def predict(self, obs, noise=None, prefix=None):
        self.entered.set()
        assert self.release.wait(30), "the test never released the backend"
        return self.inner.predict(obs, noise, prefix)


def healthz(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def test_health_waits_for_warm_up_and_inference_never_blocks_the_event_loop(lowdim):
    policy, spec = lowdim
    backend = BlockingBackend(TorchBackend(policy))
    handle = PolicyServer(backend, spec, port=0, quiet=True).start_in_thread(wait_ready=False)
    try:
        assert backend.entered.wait(30)
        assert healthz(handle.port) == 503  # warm-up still running
        backend.release.set()
        for _ in range(1000):
            if healthz(handle.port) == 200:
                break
            time.sleep(0.01)
        assert handle.server.ready
        backend.release.clear()
        backend.entered.clear()
        with PolicyClient(handle.uri) as busy:
            answer = {}
            worker = threading.Thread(target=lambda: answer.update(busy.infer({"obs": np.zeros((2, 5), np.float32)})))
            worker.start()
            assert backend.entered.wait(30)  # the worker is inside the policy now
            assert healthz(handle.port) == 200  # and the server still answers
            with PolicyClient(handle.uri) as other:
                assert other.metadata["name"] == "toy"  # and still accepts connections
            backend.release.set()
            worker.join(30)
            assert answer["actions"].shape == (4, 2)
    finally:
        backend.release.set()
        handle.stop()


def bad_requests(spec) -> list:
    good = example_inputs(spec, 1)["obs"][0]
    return [
        *BAD_MESSAGES.values(),
        "a text frame",
        wire.packb([1, 2, 3]),
        wire.packb({}),
        wire.packb({"obs": good, "prompt": "push the T"}),
        wire.packb({"obs": good[:, :3]}),
        wire.packb({"obs": good.astype(np.int64)}),
        wire.packb({"obs": np.where(np.arange(5) == 2, np.nan, good).astype(np.float32)}),
        wire.packb({"obs": np.full((2, 5), np.inf, np.float32)}),
        wire.packb({"obs": good, "noise": np.zeros((3, 2), np.float32)}),
        wire.packb({"obs": good, "reset": "yes"}),
        wire.packb({"obs": [[0.0] * 5] * 2}),
        b"\x00" * (1 << 16),
    ]


def test_server_survives_concurrent_malformed_requests(lowdim):
    policy, spec = lowdim
    server = PolicyServer(TorchBackend(policy), spec, port=0, quiet=True, max_message_bytes=1 << 15)
    inputs = example_inputs(spec, 1, seed=9)
    valid = {"obs": inputs["obs"][0], "noise": inputs["noise"][0]}
    expected = policy.predict_action({"obs": torch.from_numpy(inputs["obs"])},
                                     noise={"noise": torch.from_numpy(inputs["noise"])})["action"][0].numpy()
    bad = bad_requests(spec)
    failures, counts = [], {"valid": 0, "bad": 0}
    lock = threading.Lock()

    def client_thread(index: int, rounds: int):
        with connect(f"ws://127.0.0.1:{server.bound_port}", proxy=None, max_size=None) as connection:
            connection.recv(timeout=30)  # metadata
            for i in range(rounds):
                is_valid = (i + index) % 5 == 0
                connection.send(wire.packb(valid) if is_valid else bad[(i * 7 + index) % len(bad)])
                reply = connection.recv(timeout=30)
                ok = (not isinstance(reply, str) and np.allclose(wire.unpackb(reply)["actions"], expected, atol=1e-4)
                      if is_valid else isinstance(reply, str) and reply.startswith("bad request: "))
                with lock:
                    counts["valid" if is_valid else "bad"] += 1
                    if not ok:
                        failures.append((index, i, reply if isinstance(reply, str) else "binary"))

    def statm_rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    with server.start_in_thread() as handle:
        def run_clients(rounds: int):
            threads = [threading.Thread(target=client_thread, args=(k, rounds)) for k in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        run_clients(100)
        rss_after_warm_up = statm_rss_mb()
        run_clients(400)
        assert healthz(handle.port) == 200
        with PolicyClient(handle.uri) as client:  # still serving
            np.testing.assert_allclose(client.infer(valid)["actions"], expected, atol=1e-4)
    assert not failures, failures[:5]
    assert counts["valid"] == 400 and counts["bad"] == 1600
    assert server.errors_sent == 1600
    assert statm_rss_mb() - rss_after_warm_up < 100  # four times the traffic did not grow the process


def test_a_client_that_disconnects_mid_request_does_not_hurt_the_server(server):
    for _ in range(5):
        with connect(server.uri, proxy=None) as connection:
            connection.recv(timeout=30)
            connection.send(wire.packb({"obs": np.zeros((2, 5), np.float32)}))
    with PolicyClient(server.uri) as client:
        assert client.infer({"obs": np.zeros((2, 5), np.float32)})["actions"].shape == (4, 2)
    assert server.server.errors_sent == 0


def test_policy_client_waits_for_a_server_that_is_starting(lowdim):
    policy, spec = lowdim
    with PolicyServer(TorchBackend(policy), spec, port=0, quiet=True).start_in_thread() as handle:
        port = handle.port
    # Nothing listens on the port now; the client retries until the server is back.
    server = PolicyServer(TorchBackend(policy), spec, port=port, quiet=True)
    starter = threading.Timer(0.5, lambda: results.update(handle=server.start_in_thread()))
    results = {}
    starter.start()
    try:
        with PolicyClient(f"ws://127.0.0.1:{port}", connect_timeout=60) as client:
            assert client.spec == spec
    finally:
        starter.join()
        results["handle"].stop()
    with pytest.raises(ConnectionError, match="no policy server"):
        PolicyClient(f"ws://127.0.0.1:{port}", connect_timeout=0.3)


# ---------------------------------------------------------------------------------------------- control runtime
def test_chunk_queue_hand_over_modes():
    queue = ChunkQueue("replace")
    assert queue.merge(0, np.arange(4.0)[:, None], next_step=0) == 0
    assert queue.pop(0) == 0 and queue.pop(1) == 1
    # A chunk planned at step 1 arrives when step 2 is next: its first action is past, the rest replace the tail.
    assert queue.merge(1, np.arange(10.0, 14.0)[:, None], next_step=2) == 1
    assert [queue.pop(s).item() for s in (2, 3, 4)] == [11, 12, 13] and queue.pop(5) is None
    # Temporal ensembling: the oldest prediction weighs exp(0), the next exp(-0.01).
    queue = ChunkQueue("ensemble", ensemble_k=0.01)
    queue.merge(0, np.array([[0.0], [1.0]]), next_step=0)
    queue.merge(1, np.array([[3.0], [5.0]]), next_step=1)
    w = np.exp(-0.01)
    assert queue.pop(1).item() == pytest.approx((1.0 + 3.0 * w) / (1 + w)) and queue.pop(2).item() == 5.0


class StepCounterEnv:
    """Observation = the number of steps taken; records the actions it was given."""

    def __init__(self, length: int = 40):
        self.length, self.actions = length, []

    def reset(self, seed=None):
        self.actions = []
        return np.full(5, 0.0, np.float32), {}

    def step(self, action):
        self.actions.append(float(action[0]))
        k = len(self.actions)
        return np.full(5, float(k), np.float32), 0.0, False, k >= self.length, {}


class PlannerClient:
    """A chunk from observation k holds the values k, k + 1, ...: an executed action shows the step it was
    planned for. ``delay`` seconds per request; as many actions as asked (``action_steps``, as the server)."""

    def __init__(self, spec, delay: float):
        self.spec, self.delay = spec, delay

    def infer(self, request):
        time.sleep(self.delay)
        k = float(request["obs"][-1, 0])
        steps = request.get("action_steps", self.spec.n_action_steps)
        return {"actions": np.repeat((k + np.arange(steps))[:, None], 2, axis=1)}


@pytest.mark.parametrize("mode", ["sync", "replace", "ensemble"])
def test_control_loop_executes_each_action_at_the_step_it_was_planned_for(lowdim, mode):
    _, spec = lowdim
    env = StepCounterEnv(20)
    loop = ControlLoop(PlannerClient(spec, delay=0.0), rate_hz=10, mode=mode)  # real time, fast answers
    result = loop.run_episode(env, seed=0)
    loop.close()
    assert result.steps == 20
    # Each action is the one planned for its step, or (only if the machine stalled) a hold of the previous one.
    held = [step for step, action in enumerate(env.actions) if abs(action - step) > 1e-9]
    assert all(abs(env.actions[step] - env.actions[step - 1]) < 1e-9 for step in held)
    assert len(held) == result.underruns


@pytest.mark.parametrize("mode, chunks", [("sync", 10), ("replace", 10), ("ensemble", 40)])
def test_without_delay_the_loop_requests_what_eval_requests(lowdim, mode, chunks):
    _, spec = lowdim
    env = StepCounterEnv(40)
    loop = ControlLoop(PlannerClient(spec, delay=0.0), mode=mode, delay_steps=0)
    result = loop.run_episode(env, seed=0)
    np.testing.assert_allclose(env.actions, np.arange(40), rtol=0, atol=1e-9)
    assert result.underruns == 0 and result.dropped_actions == 0
    assert result.chunks == chunks  # sync and replace: a chunk every Ta = 4 steps, as `eval`; ensemble: every step


@pytest.mark.parametrize("delay", [1, 2, 3])
def test_replace_mode_requests_ahead_of_a_delay_and_drops_what_is_past(lowdim, delay):
    _, spec = lowdim
    env = StepCounterEnv(30)
    loop = ControlLoop(PlannerClient(spec, delay=0.0), mode="replace", delay_steps=delay)
    result = loop.run_episode(env, seed=0)
    assert env.actions == list(range(30))  # never a stale or a repeated action
    assert result.underruns == 0 and result.idle_steps == delay  # only the first chunk is waited for
    assert result.dropped_actions == delay * (result.chunks - 1)  # the first d actions of each later chunk


def test_a_delay_beyond_the_chunk_s_spare_actions_runs_the_queue_dry(lowdim):
    """The loop asks for the chunk from the current step (T - To + 1 = 7 actions) and executes 4 before the next
    request, so a delay of up to 3 steps is covered (above); at d = 4 the queue runs dry and the last action is
    held: counted as underruns, and no stale action is ever executed."""
    _, spec = lowdim
    env = StepCounterEnv(30)
    result = ControlLoop(PlannerClient(spec, delay=0.0), mode="replace", delay_steps=4).run_episode(env, seed=0)
    assert result.underruns > 0
    for step, action in enumerate(env.actions):
        assert action == step or action == env.actions[step - 1]  # the planned action, or a hold


def test_sync_mode_stands_still_for_each_delay(lowdim):
    _, spec = lowdim
    env = StepCounterEnv(40)
    loop = ControlLoop(PlannerClient(spec, delay=0.0), mode="sync", delay_steps=3)
    result = loop.run_episode(env, seed=0)
    assert env.actions == list(range(40)) and result.chunks == 10 and result.idle_steps == 3 * 10


def test_replace_mode_keeps_up_with_a_slow_server_in_real_time(lowdim):
    _, spec = lowdim
    env = StepCounterEnv(20)
    # Each round trip takes 1.5 control periods: the loop must ask early and drop what is past.
    loop = ControlLoop(PlannerClient(spec, delay=0.15), rate_hz=10, mode="replace")
    result = loop.run_episode(env, seed=0)
    loop.close()
    assert result.dropped_actions > 0
    held = [step for step, action in enumerate(env.actions) if action != step]
    assert all(env.actions[step] == env.actions[step - 1] for step in held) and len(held) == result.underruns


def test_best_of_n_keeps_the_chunk_that_continues_the_committed_actions():
    committed = np.array([[1.0, 1.0], [2.0, 2.0]])
    tail = np.full((2, 2), 9.0)  # what follows the overlap does not count
    candidates = np.stack([np.concatenate([committed + 3, 0 * tail]), np.concatenate([committed, tail]),
                           np.concatenate([committed[::-1], 0 * tail])])
    assert choose_consistent(candidates[:, :2], committed) == 1 and choose_consistent(candidates, committed) == 1
    # Early steps weigh most: a candidate off at the last step beats one off at the first.
    early, late = committed.copy(), committed.copy()
    early[0] += 1
    late[1] += 1
    assert choose_consistent(np.stack([early, late]), committed) == 1
    assert choose_consistent(candidates, np.zeros((0, 2))) == 0


def test_server_best_of_n_draws_candidates_in_one_pass_and_returns_the_consistent_one(lowdim):
    policy, spec = lowdim
    backend = TorchBackend(policy)
    batches = []
    predict = backend.predict
    backend.predict = lambda obs, noise, prefix=None: batches.append(len(obs["obs"])) or predict(obs, noise, prefix)
    obs = example_inputs(spec, 1, seed=2)["obs"][0]
    noise = np.random.default_rng(0).standard_normal((6, 8, 2)).astype(np.float32)
    chunks = policy.predict_action({"obs": torch.from_numpy(np.repeat(obs[None], 6, 0))},
                                   noise={"noise": torch.from_numpy(noise)})["action"].numpy()
    with PolicyServer(backend, spec, port=0, quiet=True).start_in_thread() as handle, PolicyClient(handle.uri) as c:
        batches.clear()
        reply = c.infer({"obs": obs, "noise": noise, "best_of_n": 6, "committed": chunks[4, :3]})
        assert reply["best_of_n"] == {"candidates": 6, "chosen": 4} and batches == [6]
        np.testing.assert_allclose(reply["actions"], chunks[4], atol=1e-4)
        reply = c.infer({"obs": obs, "best_of_n": 5, "committed": chunks[0, :2]})  # noise drawn by the server
        assert reply["best_of_n"]["candidates"] == 5 and reply["actions"].shape == (4, 2)
        for bad, message in (({"best_of_n": 0}, "must be an int in"),
                             ({"best_of_n": 3}, r"must have shape \(3, 8, 2\)"),
                             ({"committed": np.zeros((2, 3), np.float32)}, r"must have shape \(B, 2\)")):
            with pytest.raises(RuntimeError, match=message):
                c.infer({"obs": obs, "noise": noise[0], **bad})


class RecordingPlanner(PlannerClient):
    def __init__(self, spec):
        super().__init__(spec, delay=0.0)
        self.requests = []

    def infer(self, request):
        self.requests.append(request)
        return super().infer(request)


def test_best_of_n_through_the_server_sends_what_the_queue_still_holds(lowdim):
    """Fast answers: each request (every Ta = 4 steps) commits the 3 actions the queue still holds of the last
    chunk's 7; the server takes them and the loop runs without a gap."""
    policy, spec = lowdim
    with PolicyServer(TorchBackend(policy), spec, port=0, quiet=True).start_in_thread() as handle, \
            PolicyClient(handle.uri) as client:
        recorded = []
        infer = client.infer
        client.infer = lambda request: recorded.append(request) or infer(request)
        env = StepCounterEnv(12)
        result = ControlLoop(client, mode="best_of_n", delay_steps=0, candidates=4).run_episode(env, seed=0)
    assert result.steps == 12 and result.underruns == 0 and result.chunks == 3
    assert [r["committed"].shape for r in recorded] == [(0, 2), (3, 2), (3, 2)]


def test_best_of_n_mode_sends_the_queued_actions_as_committed(lowdim):
    _, spec = lowdim
    client, env = RecordingPlanner(spec), StepCounterEnv(20)
    result = ControlLoop(client, mode="best_of_n", delay_steps=2, candidates=8).run_episode(env, seed=0)
    assert env.actions == list(range(20)) and result.underruns == 0
    later = client.requests[1:]
    assert later and all(r["best_of_n"] == 8 for r in later)
    for request in later:  # a request made at step k (k - 4 + 7 = k + 3) commits the rest of the previous chunk
        k = request["obs"][-1, 0]
        np.testing.assert_array_equal(request["committed"][:, 0], [k, k + 1, k + 2])


def test_control_loop_through_the_server_on_pusht(tmp_path):
    """The CLI end to end: serve the shipped policy, drive PushT through it, shut the server down cleanly."""
    from drifting_policy.deploy.cli import main as deploy

    serve = subprocess.Popen([sys.executable, "-m", "drifting_policy.cli", "serve",
                              "checkpoint=pretrained/pusht_lowdim_drifting", "port=0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any(" on ws://" in line for line in lines) and serve.poll() is None:
            lines.append(serve.stdout.readline())
        uri = next(word.rstrip(";") for word in lines[-1].split() if word.startswith("ws://"))
        deploy("control", [f"server={uri}", "episodes=1", "max_steps=30", "rate_hz=20", "videos=1",
                           f"output_dir={tmp_path}"])
    finally:
        serve.terminate()
        output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, "".join(lines) + output
    assert "stopped after" in output
    log = OmegaConf.load(tmp_path / "control_log.json")
    # One request every Ta = 4 steps at most (8 in 30 steps); how many arrive in time depends on the machine's load.
    assert log.steps == 30 and log.episodes == 1 and 2 <= log.chunks <= 8
    assert (tmp_path / "media" / "test_100000.mp4").stat().st_size > 0


def test_shipped_policy_exports_evaluates_and_serves(tmp_path, capsys):
    """The pretrained PushT policy: the export command's parity check, and `eval` on one test seed."""
    from drifting_policy.cli import main as cli

    cli(["export", "checkpoint=pretrained/pusht_lowdim_drifting", f"out={tmp_path / 'pusht.onnx'}"])
    printed = capsys.readouterr().out
    assert "parity with torch" in printed and (tmp_path / "pusht.onnx").is_file()
    spec = OnnxPolicy(tmp_path / "pusht.onnx").spec
    assert (spec.task, spec.n_obs_steps, spec.n_action_steps, spec.control_rate_hz) == ("pusht_lowdim", 2, 4, 10)
    cli(["eval", "checkpoint=pretrained/pusht_lowdim_drifting", "n_test=1", "n_train=0", "n_envs=1",
         f"output_dir={tmp_path / 'eval'}"])
    log = OmegaConf.load(tmp_path / "eval" / "eval_log.json")
    assert 0 <= log["test/mean_score"] <= 1 and log.task == "pusht_lowdim"
