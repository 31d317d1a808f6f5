"""The controller's side of the server: ``PolicyClient`` (openpi's protocol, with retries and timeouts).

    client = PolicyClient("ws://127.0.0.1:8000", api_key=None)
    client.spec.n_obs_steps, client.spec.control_rate_hz    # from the server's metadata
    actions = client.infer({"obs": stacked})["actions"]     # (To, 20) -> (Ta, 2)

Unlike openpi's 0.1.2 client it waits for a server that is still starting (with back-off), never blocks
forever on a reply (``request_timeout``), and returns writeable arrays. A refused API key is not retried.
"""
from __future__ import annotations

import contextlib
import time

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from drifting_policy.deploy import wire
from drifting_policy.deploy.spec import PolicySpec


class PolicyClient:
    def __init__(self, uri: str = "ws://127.0.0.1:8000", api_key: str | None = None, connect_timeout: float = 30.0,
                 request_timeout: float = 10.0):
        if not uri.startswith(("ws://", "wss://")):
            raise ValueError(f"server must be a ws:// or wss:// address; got {uri!r}")
        self.uri, self.request_timeout = uri, request_timeout
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        # The connection is entered as a context manager (websockets deprecates using connect() otherwise) and
        # left by close().
        self._exit_stack = contextlib.ExitStack()
        deadline, delay = time.monotonic() + connect_timeout, 0.05
        while True:
            try:
                self.connection = self._exit_stack.enter_context(
                    connect(uri, additional_headers=headers, compression=None, max_size=None, proxy=None,
                            open_timeout=max(1.0, deadline - time.monotonic())))
                break
            except InvalidStatus as error:
                if error.response.status_code in (401, 403):
                    raise PermissionError(f"{uri} refused the connection: {error.response.body.decode().strip()}") \
                        from None
                if time.monotonic() + delay > deadline:
                    raise
            except (OSError, TimeoutError) as error:
                if time.monotonic() + delay > deadline:
                    raise ConnectionError(f"no policy server at {uri} after {connect_timeout:.0f} s: {error}") \
                        from None
            time.sleep(delay)
            delay = min(2 * delay, 2.0)
        self.metadata = wire.unpackb(self.connection.recv(timeout=request_timeout))
        self.spec = PolicySpec.from_dict(self.metadata)

    def infer(self, request: dict) -> dict:
        """Send one request (a dict of numpy arrays), return the reply; a server-side error raises RuntimeError
        with the server's text, as openpi's client does."""
        self.connection.send(wire.packb(request))
        try:
            reply = self.connection.recv(timeout=self.request_timeout)
        except TimeoutError:
            # A late reply would be read as the answer to the next request: this connection is done.
            self.close()
            raise TimeoutError(f"{self.uri}: no reply within {self.request_timeout} s; connection closed") from None
        if isinstance(reply, str):
            raise RuntimeError(f"policy server: {reply}")
        return wire.unpackb(reply)

    def close(self) -> None:
        self._exit_stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
