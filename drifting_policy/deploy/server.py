"""A policy server that speaks openpi's websocket protocol, so ``openpi-client`` works unchanged.

    drifting-policy serve checkpoint=pretrained/pusht_lowdim_drifting port=8000 [api_key=...] [backend=onnx]

Protocol (openpi's): on connect the server sends one binary frame, the metadata (the policy's spec: observation
keys, per-step shapes and dtypes, the action chunk (Ta, Da) and its bounds, To, the control rate, the model's
name and type). Then each request is one binary frame, a msgpack-numpy map of observations, and each reply one
binary frame ``{"actions": (Ta, Da) float32, "policy_timing": {"infer_ms"}, "server_timing": {"infer_ms",
"queue_ms", "prev_total_ms"}}``; only ``actions`` is an array, so openpi's ``ActionChunkBroker`` slices it right.
A request holds each observation key either stacked, (To, *shape), or as one step, (*shape): then the server
keeps the connection's last To steps (the first repeated after a reset) as ``select_action`` does. Optional
keys: the policy's noise inputs (for reproducible chunks), ``reset`` (a bool, clears that history), and for
best-of-N ``best_of_n`` (N candidates drawn in one batched pass; noise, if sent, then has a leading axis N) with
``committed`` (m, Da), the actions the robot still executes from the request's step on: the reply is the candidate
closest to them (its index in ``best_of_n.chosen``); ``action_steps`` (an int in [1, T - To + 1], default Ta): how
much of the chunk to return from the current step, so a controller can keep acting while the next chunk is
computed; for a policy trained with ``max_prefix_delay`` = D, ``prefix`` (d <= D, Da): the actions the robot
executes while this request is in flight, which the chunk continues.

Where it does better than openpi's server: the ``Authorization: Api-Key <key>`` header that openpi's client sends
is checked (a missing or wrong key is refused at the handshake with HTTP 401); inference runs on a worker thread,
so health checks and other connections stay responsive; ``GET /healthz`` answers 200 only after a warm-up
inference (503 before); a bad request gets a text frame naming what was expected (openpi's client raises it as
``RuntimeError``) and the connection keeps serving; nothing is unpickled; it binds 127.0.0.1 unless told
otherwise. A frame over ``max_message_bytes`` is answered with an error; one over four times that is refused by
the websocket layer itself, which closes the connection (code 1009), so no client can make the server hold more.
"""
from __future__ import annotations

import asyncio
import hmac
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus

import numpy as np
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from drifting_policy.deploy import wire
from drifting_policy.deploy.best_of_n import MAX_CANDIDATES, choose_consistent
from drifting_policy.deploy.spec import (
    PREFIX_KEY,
    ObservationError,
    PolicySpec,
    check_array,
    check_keys,
    example_inputs,
    padded_prefix,
)
from drifting_policy.step_queues import StepHistory, stack_steps

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RESET_KEY = "reset"
BEST_OF_N_KEY, COMMITTED_KEY, STEPS_KEY = "best_of_n", "committed", "action_steps"
OPTIONAL_KEYS = (RESET_KEY, BEST_OF_N_KEY, COMMITTED_KEY, STEPS_KEY, PREFIX_KEY)
MAX_MESSAGE_BYTES = 16 * 2**20


@dataclass
class Request:
    """A checked request: a batch of one observation ({key: (1, To, *shape)}) repeated ``candidates`` times, the
    noise for each ({name: (candidates, *shape)}, or None: drawn by the backend), the committed actions to
    choose by (best-of-N), how many actions to return, and the prefix to continue ((candidates, d, Da) or None)."""

    obs: dict
    noise: dict | None
    candidates: int = 1
    committed: np.ndarray | None = None
    steps: int = 1
    prefix: np.ndarray | None = None


def _int_option(request, key: str, default: int, low: int, high: int) -> int:
    value = request.get(key, default)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise ObservationError(f"'{key}' must be an int in [{low}, {high}]; got {value!r}")
    return int(value)


def parse_request(spec: PolicySpec, request, history: StepHistory) -> Request:
    """Check one request against the spec. Everything is checked before the connection's step history changes,
    so a bad request leaves no trace."""
    check_keys(spec, request, extra=OPTIONAL_KEYS)
    reset = request.get(RESET_KEY, False)
    if not isinstance(reset, (bool, np.bool_)):
        raise ObservationError(f"'{RESET_KEY}' must be a bool; got {type(reset).__name__}")
    candidates = _int_option(request, BEST_OF_N_KEY, 1, 1, MAX_CANDIDATES)
    steps = _int_option(request, STEPS_KEY, spec.n_action_steps, 1, spec.chunk_steps)
    committed = None
    if COMMITTED_KEY in request:
        committed = check_array(COMMITTED_KEY, request[COMMITTED_KEY], (None, spec.action_dim))
    prefix = None
    if PREFIX_KEY in request:
        prefix = check_array(PREFIX_KEY, request[PREFIX_KEY], (None, spec.action_dim))
        padded_prefix(spec, prefix[None], 1)  # refuses a prefix the policy cannot continue, before any change
        prefix = np.repeat(prefix[None], candidates, axis=0) if len(prefix) else None
    forms = {}
    for key in spec.observation:
        shape, value = spec.observation_shape(key), request[key]
        ndim = getattr(value, "ndim", None)
        forms[key] = "step" if ndim == len(shape) else "stacked" if ndim == len(shape) + 1 else None
        if forms[key] is None:
            raise ObservationError(f"{key!r} must be stacked, shape ({spec.n_obs_steps}, "
                                   f"{', '.join(map(str, shape))}), or one step, shape {tuple(shape)}; got "
                                   f"{getattr(value, 'shape', type(value).__name__)}")
    if len(set(forms.values())) > 1:
        raise ObservationError(f"send every observation key stacked or every key as one step; got {forms}")
    stacked = forms[next(iter(forms))] == "stacked"
    leading = (spec.n_obs_steps,) if stacked else ()
    obs = {key: check_array(key, request[key], (*leading, *spec.observation_shape(key))) for key in spec.observation}
    # One noise draw per candidate: (*shape) for a single chunk, (N, *shape) with best_of_n = N.
    noise_leading = (candidates,) if candidates > 1 else ()
    noise = {name: check_array(name, request[name], (*noise_leading, *shape)).reshape(candidates, *shape)
             for name, shape in spec.noise.items() if name in request}
    if reset:
        history.reset()
    if not stacked:
        history.steps = history.pushed(obs)
        obs = stack_steps(history.steps, obs, np.stack)
    obs = {key: np.repeat(value[None], candidates, axis=0) for key, value in obs.items()}
    return Request(obs, noise or None, candidates, committed, steps, prefix)


def infer(backend, request: Request) -> tuple[np.ndarray, int]:
    """(the chosen chunk (steps, Da), its index among the candidates): all candidates in one batched pass."""
    chunks = backend.predict(request.obs, request.noise, request.prefix)
    chosen = 0 if request.committed is None else choose_consistent(chunks, request.committed)
    return chunks[chosen, : request.steps], chosen


class LocalClient:
    """A ``PolicyClient`` without the network: the server's request checks and inference in this process (for
    simulated-delay studies, where the round trip does not matter)."""

    def __init__(self, backend, spec: PolicySpec):
        self.backend, self.spec = backend, spec
        self.history = StepHistory(spec.n_obs_steps)

    def infer(self, request: dict) -> dict:
        parsed = parse_request(self.spec, request, self.history)
        actions, chosen = infer(self.backend, parsed)
        reply = {"actions": actions}
        if parsed.candidates > 1:
            reply["best_of_n"] = {"candidates": parsed.candidates, "chosen": chosen}
        return reply

    def close(self) -> None:
        pass


class PolicyServer:
    """Serves ``backend.predict(obs, noise, prefix) -> (B, T - To + 1, Da)`` (a ``TorchBackend`` or an
    ``OnnxPolicy``)."""

    def __init__(self, backend, spec: PolicySpec, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES, quiet: bool = False):
        self.backend, self.spec = backend, spec
        self.host, self.port, self.api_key = host, port, api_key or None
        self.max_message_bytes = max_message_bytes
        self.quiet = quiet
        self.metadata = {**spec.to_dict(), "server": "drifting-policy", "request_forms": ["stacked", "step"],
                         "optional_keys": [*spec.noise, *OPTIONAL_KEYS]}
        # One worker: requests from every connection queue for the policy, the event loop never waits on it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        self.ready = False
        self.bound_port: int | None = None
        self.requests_served = 0
        self.errors_sent = 0

    def log(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ handshake: health and authentication
    def process_request(self, connection, request):
        if request.path == "/healthz":
            if self.ready:
                return connection.respond(HTTPStatus.OK, "OK\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "warming up\n")
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                self.log(f"refused a connection from {connection.remote_address}: missing or wrong API key")
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key "
                                          "(send the header 'Authorization: Api-Key <key>')\n")
        return None

    # ------------------------------------------------------------------ one connection
    def _infer(self, request: Request) -> tuple[np.ndarray, int, float, float]:
        """(the chosen chunk (steps, Da), its index among the candidates, start and end times)."""
        started = time.perf_counter()
        actions, chosen = infer(self.backend, request)
        return actions, chosen, started, time.perf_counter()

    async def handle(self, connection) -> None:
        loop = asyncio.get_running_loop()
        history = StepHistory(self.spec.n_obs_steps)
        prev_total_ms = 0.0
        try:
            await connection.send(wire.packb(self.metadata))
            async for message in connection:
                received = time.perf_counter()
                try:
                    if isinstance(message, str):
                        raise wire.WireError("expected a binary frame holding a msgpack map; got a text frame")
                    if len(message) > self.max_message_bytes:
                        raise wire.WireError(f"message of {len(message)} bytes is over the limit of "
                                             f"{self.max_message_bytes}")
                    request = parse_request(self.spec, wire.unpackb(message), history)
                except ValueError as error:  # WireError and ObservationError
                    self.errors_sent += 1
                    await connection.send(f"bad request: {error}")
                    continue
                actions, chosen, started, finished = await loop.run_in_executor(self.executor, self._infer, request)
                infer_ms = (finished - started) * 1e3
                reply = {"actions": np.ascontiguousarray(actions, dtype=np.float32),
                         "policy_timing": {"infer_ms": infer_ms},
                         "server_timing": {"infer_ms": (time.perf_counter() - received) * 1e3,
                                           "queue_ms": (started - received) * 1e3, "prev_total_ms": prev_total_ms}}
                if request.candidates > 1:
                    reply["best_of_n"] = {"candidates": request.candidates, "chosen": chosen}
                await connection.send(wire.packb(reply))
                self.requests_served += 1
                prev_total_ms = (time.perf_counter() - received) * 1e3
        except ConnectionClosed:
            pass  # the client went away, possibly mid-request: nothing to answer

    # ------------------------------------------------------------------ lifecycle
    def warm_up(self) -> None:
        """One inference before /healthz says ready, so the first real request does not pay for it."""
        inputs = example_inputs(self.spec, 1)
        obs = {key: inputs[key] for key in self.spec.observation}
        noise = {name: inputs[name] for name in self.spec.noise} or None
        self.backend.predict(obs, noise)

    async def serve(self, stop: asyncio.Event, started: threading.Event | None = None) -> None:
        if self.host not in LOOPBACK and self.api_key is None:
            self.log(f"WARNING: serving on {self.host} without an API key: anyone who can reach this port can "
                     "drive the policy; set api_key=...")
        async with serve(self.handle, self.host, self.port, process_request=self.process_request,
                         max_size=4 * self.max_message_bytes, compression=None) as server:
            self.bound_port = server.sockets[0].getsockname()[1]
            if started is not None:
                started.set()
            await asyncio.get_running_loop().run_in_executor(self.executor, self.warm_up)
            self.ready = True
            self.log(f"serving {self.spec.name} ({self.spec.policy_type}, {self.spec.task}) on "
                     f"ws://{self.host}:{self.bound_port}; health: http://{self.host}:{self.bound_port}/healthz; "
                     f"API key {'required' if self.api_key else 'not required'}")
            await stop.wait()
            self.ready = False
        self.executor.shutdown(wait=True)
        self.log(f"stopped after {self.requests_served} requests ({self.errors_sent} bad requests answered)")

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then close every connection and let the running inference finish."""
        async def main():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(stop)

        asyncio.run(main())

    def start_in_thread(self, timeout: float = 60.0, wait_ready: bool = True) -> ServerThread:
        """Serve from a background thread (tests, benchmarks, notebooks); ``stop()`` the handle when done. Returns
        once the port is bound and, with ``wait_ready``, the warm-up inference is done."""
        return ServerThread(self, timeout, wait_ready)


class ServerThread:
    def __init__(self, server: PolicyServer, timeout: float, wait_ready: bool):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        started, self.error = threading.Event(), None

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(server.serve(self._stop, started))
            except BaseException as error:  # reported to the thread that started us
                self.error = error
                started.set()

        self.thread = threading.Thread(target=run, name="policy-server", daemon=True)
        self.thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"the policy server did not start within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"the policy server failed to start: {self.error}") from self.error
        deadline = time.monotonic() + timeout
        while wait_ready and not server.ready:
            if self.error is not None:
                raise RuntimeError(f"the policy server stopped during its warm-up: {self.error}") from self.error
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TimeoutError(f"the policy server's warm-up did not finish within {timeout} s")
            time.sleep(0.01)
        self.port = server.bound_port
        self.uri = f"ws://{server.host}:{self.port}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=30)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
