"""What a deployed policy takes and gives: observation keys and shapes, the action chunk, its noise, its rate.

The spec travels with the policy: in an exported ONNX file's metadata, in the server's first message to every
client, in ``OnnxPolicy``. It is plain data (numpy only, no torch), so a controller process can read it without
the training stack.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

SPEC_METADATA_KEY = "drifting_policy_spec"  # the ONNX metadata entry that holds the spec as JSON
PREFIX_KEY, PREFIX_MASK_KEY = "prefix", "prefix_mask"  # a prefix policy's graph inputs


@dataclass
class PolicySpec:
    """``observation``: {key: {"shape": per-step shape, "dtype": "float32", "type": "low_dim" | "rgb"}}, in the
    graph's input order. A request stacks ``n_obs_steps`` steps of each: (To, *shape), or (B, To, *shape) for a
    batch. ``action``: the executed chunk, ``shape`` (Ta, Da) in data units, ``low``/``high`` the range of the
    demonstrated actions (Da each). ``noise``: {name: per-sample shape} of the generator's Gaussian inputs
    (``DriftingPolicy.noise_shapes`` without the batch axis). ``max_prefix_steps``: how many committed actions
    the policy continues (``prefix``; 0 for a policy trained without ``max_prefix_delay``).

    The graph returns the chunk from the current step on, ``chunk_steps`` = T - To + 1 actions; the first Ta
    are what ``eval`` executes, the rest let a controller keep acting while the next chunk is computed."""

    name: str
    policy_type: str
    backbone: str
    task: str
    n_obs_steps: int
    n_action_steps: int
    horizon: int
    action_dim: int
    control_rate_hz: float
    observation: dict
    action: dict
    noise: dict = field(default_factory=dict)
    max_prefix_steps: int = 0

    @property
    def chunk_steps(self) -> int:
        return self.horizon - self.n_obs_steps + 1

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> PolicySpec:
        optional = ("noise", "max_prefix_steps")
        missing = [name for name in cls.__dataclass_fields__ if name not in data and name not in optional]
        if missing:
            raise KeyError(f"policy spec lacks {missing}; got keys {sorted(data)}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def from_json(cls, text: str) -> PolicySpec:
        return cls.from_dict(json.loads(text))

    def observation_shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.observation[key]["shape"])


def example_inputs(spec: PolicySpec, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs of the graph: observations uniform in [0, 1) for images and standard normal
    otherwise, Gaussian noise, and for a prefix policy a prefix (in the actions' range) with a random length."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for key, meta in spec.observation.items():
        shape = (batch_size, spec.n_obs_steps, *meta["shape"])
        inputs[key] = (rng.random(shape) if meta["type"] == "rgb" else rng.standard_normal(shape)).astype(np.float32)
    for name, shape in spec.noise.items():
        inputs[name] = rng.standard_normal((batch_size, *shape)).astype(np.float32)
    if spec.max_prefix_steps:
        low, high = np.asarray(spec.action["low"]), np.asarray(spec.action["high"])
        inputs[PREFIX_KEY] = rng.uniform(low, high, (batch_size, spec.max_prefix_steps, spec.action_dim)
                                         ).astype(np.float32)
        lengths = rng.integers(0, spec.max_prefix_steps + 1, (batch_size, 1))
        inputs[PREFIX_MASK_KEY] = (np.arange(spec.max_prefix_steps) < lengths).astype(np.float32)
    return inputs


def padded_prefix(spec: PolicySpec, prefix: np.ndarray | None, batch_size: int) -> dict[str, np.ndarray]:
    """The graph's prefix inputs for ``prefix`` (B, d, Da) committed actions (or None: none): the actions padded
    to (B, D, Da) and the mask (B, D); {} for a policy without prefix inputs (then a prefix is refused)."""
    D, Da = spec.max_prefix_steps, spec.action_dim
    if D == 0:
        if prefix is not None and np.asarray(prefix).size:
            raise ObservationError(f"{spec.name} was not trained to continue a prefix (max_prefix_delay = 0); "
                                   f"send no '{PREFIX_KEY}'")
        return {}
    prefix = np.zeros((batch_size, 0, Da), np.float32) if prefix is None else check_array(
        PREFIX_KEY, prefix, (batch_size, None, Da))
    d = prefix.shape[1]
    if d > D:
        raise ObservationError(f"'{PREFIX_KEY}' holds {d} actions; this policy continues at most {D}")
    padded = np.concatenate([prefix, np.zeros((batch_size, D - d, Da), np.float32)], axis=1)
    return {PREFIX_KEY: padded, PREFIX_MASK_KEY: np.repeat((np.arange(D) < d)[None], batch_size, 0).astype(np.float32)}


class ObservationError(ValueError):
    """A request or observation that does not match the spec; the message names what was expected."""


def _shape_text(shape) -> str:
    return "(" + ", ".join("B" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(name: str, value, shape: tuple) -> np.ndarray:
    """``value`` as float32 if it is a finite float ndarray of ``shape`` (None = any size), else ObservationError."""
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"{name!r} must be a float32 array {_shape_text(shape)}; got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise ObservationError(f"{name!r} must be float32 (or another float type) {_shape_text(shape)}; "
                               f"got dtype {value.dtype}")
    if value.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, value.shape, strict=True)):
        raise ObservationError(f"{name!r} must have shape {_shape_text(shape)}; got {tuple(value.shape)}")
    value = value.astype(np.float32, copy=False)
    finite = np.isfinite(value)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ObservationError(f"{name!r} holds a non-finite value ({value[index]}) at index {index}")
    return value


def check_keys(spec: PolicySpec, inputs, extra: tuple[str, ...] = ()) -> None:
    """The observation keys must all be there; noise names and ``extra`` may be; nothing else."""
    if not isinstance(inputs, dict):
        raise ObservationError(f"expected a dict of observations {list(spec.observation)}; got {type(inputs).__name__}")
    missing = [key for key in spec.observation if key not in inputs]
    unknown = [key for key in inputs if key not in spec.observation and key not in spec.noise and key not in extra]
    if missing or unknown:
        optional = [*spec.noise, *extra]
        raise ObservationError(f"observation keys must be {list(spec.observation)}" +
                               (f" (optional: {optional})" if optional else "") +
                               f"; missing {missing}, unknown {[str(k) for k in unknown]}")
    given = [name for name in spec.noise if name in inputs]
    if given and len(given) != len(spec.noise):
        raise ObservationError(f"noise needs all of {list(spec.noise)} or none; got {given}")


def check_batch(spec: PolicySpec, inputs: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Observations (B, To, *shape) and optional noise (B, *noise shape) of one batch, checked against the spec
    (keys, shapes, float dtypes, finiteness, one batch size). Returns float32 ``(observations, noise or None)``."""
    check_keys(spec, inputs)
    obs = {key: check_array(key, inputs[key], (None, spec.n_obs_steps, *spec.observation_shape(key)))
           for key in spec.observation}
    noise = {name: check_array(name, inputs[name], (None, *spec.noise[name])) for name in spec.noise if name in inputs}
    sizes = {key: value.shape[0] for key, value in {**obs, **noise}.items()}
    if len(set(sizes.values())) != 1:
        raise ObservationError(f"every input needs the same batch size B; got {sizes}")
    return obs, (noise or None)
