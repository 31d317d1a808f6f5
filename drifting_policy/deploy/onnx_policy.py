"""An exported policy on onnxruntime, without torch: ``predict_action`` and ``select_action`` as the torch policy.

    policy = OnnxPolicy("pusht.onnx")
    policy.predict_action({"obs": obs})["action"]      # obs (B, To, 20) -> (B, Ta, 2), data units
    policy.predict_action({"obs": obs}, prefix=committed)   # a prefix policy continues committed (B, d, 2)
    policy.reset(); action = policy.select_action({"obs": step_obs})   # (B, 20) -> (B, 2), a new chunk every Ta calls

Needs only numpy and onnxruntime (``pip install "drifting-models[deploy]"``). The spec (keys, shapes, To, Ta,
control rate) is read from the file's metadata.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from drifting_policy.deploy.spec import (
    SPEC_METADATA_KEY,
    PolicySpec,
    check_array,
    check_batch,
    check_keys,
    padded_prefix,
)
from drifting_policy.step_queues import ActionQueues, stack_steps


class OnnxPolicy:
    def __init__(self, path: str | os.PathLike, seed: int | None = None, threads: int | None = None,
                 providers: list[str] | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        if SPEC_METADATA_KEY not in metadata:
            raise ValueError(f"{path}: no '{SPEC_METADATA_KEY}' in the ONNX metadata; export it with "
                             "`drifting-policy export`")
        self.spec = PolicySpec.from_json(metadata[SPEC_METADATA_KEY])
        self.input_names = [item.name for item in self.session.get_inputs()]
        self.rng = np.random.default_rng(seed)
        self.reset()

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The graph on checked float32 inputs (observations, noise, padded prefix): (B, T - To + 1, Da)."""
        return self.session.run(["action"], {name: inputs[name] for name in self.input_names})[0]

    def draw_noise(self, batch_size: int) -> dict[str, np.ndarray]:
        return {name: self.rng.standard_normal((batch_size, *shape), dtype=np.float32)
                for name, shape in self.spec.noise.items()}

    def predict(self, obs: dict[str, np.ndarray], noise: dict[str, np.ndarray] | None = None,
                prefix: np.ndarray | None = None) -> np.ndarray:
        """The chunk from the current step (B, T - To + 1, Da) for checked float32 observations (B, To, *shape);
        noise drawn here unless given; ``prefix`` (B, d, Da): committed actions to continue (prefix policies)."""
        batch_size = next(iter(obs.values())).shape[0]
        padded = padded_prefix(self.spec, prefix, batch_size)
        return self.run({**obs, **(noise or self.draw_noise(batch_size)), **padded})

    def predict_action(self, obs_dict: dict, noise: dict | None = None,
                       prefix: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """{'action': (B, Ta, Da)} for observations {key: (B, To, *shape)}; ``noise`` as the spec's ``noise``
        with a batch axis (default: drawn from this policy's generator); ``prefix`` as in ``predict``."""
        obs, checked_noise = check_batch(self.spec, {**obs_dict, **(noise or {})})
        return {"action": self.predict(obs, checked_noise, prefix)[:, : self.spec.n_action_steps]}

    def reset(self) -> None:
        self._queues = ActionQueues(self.spec.n_obs_steps, type(self).__name__)

    def select_action(self, obs_step: dict) -> np.ndarray:
        """One action (B, Da) for one observation step {key: (B, *shape)}; a new chunk every Ta calls. A refused
        call leaves the queues as they were."""
        check_keys(self.spec, obs_step)
        step = {key: check_array(key, obs_step[key], (None, *self.spec.observation_shape(key)))
                for key in self.spec.observation}

        def predict_chunk(steps: list[dict]):
            stacked = stack_steps(steps, self.spec.observation, functools.partial(np.stack, axis=1))
            return list(self.predict_action(stacked)["action"].transpose(1, 0, 2))

        return self._queues.next_action(step, len(next(iter(step.values()))), predict_chunk)
