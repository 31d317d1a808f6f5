"""One graph per policy: raw observations and noise in, the action chunk from the current step in data units out.

A drifting policy is one network evaluation per chunk, so its whole inference (normalise the observations,
encode them, run the generator on the noise, unnormalise, take the chunk from the current step: T - To + 1
actions, of which ``eval`` executes the first Ta) is a single graph with no loop, and it exports as one. A policy
trained with ``max_prefix_delay`` = D also takes ``prefix`` (B, D, Da) and ``prefix_mask`` (B, D). Formats: ONNX
(``torch.onnx.export`` through ``torch.export``) and ``torch.export``'s
``ExportedProgram`` (``.pt2``). The batch axis is dynamic; the spec (observation and action shapes, To, Ta, the
control rate) is stored in the file's metadata.

    drifting-policy export checkpoint=pretrained/pusht_lowdim_drifting format=onnx out=pusht.onnx
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from drifting.files import atomic_path
from drifting_policy.deploy.spec import PREFIX_KEY, PREFIX_MASK_KEY, SPEC_METADATA_KEY, PolicySpec, example_inputs

EXPORT_FORMATS = ("onnx", "pt2")
PARITY_TOLERANCE = 1e-4  # max abs difference (data units) between the exported graph and torch on export
OPSET = 18


def policy_spec(policy, cfg, name: str) -> PolicySpec:
    """The spec of a policy trained with the run config ``cfg`` (its task's control rate is the env runner's fps)."""
    c = policy.config
    if c.shape_meta is None:
        observation = {"obs": {"shape": [c.obs_dim], "dtype": "float32", "type": "low_dim"}}
    else:
        observation = {key: {"shape": list(meta["shape"]), "dtype": "float32", "type": meta.get("type", "low_dim")}
                       for key, meta in c.shape_meta["obs"].items()}
    fps = cfg.task.env_runner.get("fps") if cfg is not None else None
    if fps is None:
        raise KeyError("the run config has no task.env_runner.fps: the policy's control rate is unknown")
    stats = policy.normalizer["action"].get_input_stats()
    return PolicySpec(
        name=name, policy_type=c.type, backbone=c.backbone, task=str(cfg.task.name),
        n_obs_steps=c.n_obs_steps, n_action_steps=c.n_action_steps, horizon=c.horizon, action_dim=c.action_dim,
        control_rate_hz=float(fps), observation=observation,
        action={"shape": [c.n_action_steps, c.action_dim], "dtype": "float32",
                "low": stats["min"].tolist(), "high": stats["max"].tolist()},
        noise={key: list(shape[1:]) for key, shape in policy.noise_shapes(1).items()},
        max_prefix_steps=policy.max_prefix_steps,
    )


class ChunkGraph(nn.Module):
    """``forward(*observations, *noise[, prefix, prefix_mask]) -> (B, T - To + 1, Da)``: the policy's
    ``action_chunk`` from index To - 1, with positional inputs in ``graph_input_names`` order."""

    def __init__(self, policy, spec: PolicySpec):
        super().__init__()
        if not spec.noise:
            raise ValueError(f"{type(policy).__name__} takes no explicit noise, so it has no one-graph export "
                             "(a diffusion policy's sampler is a loop of network evaluations)")
        self.policy = policy
        self.obs_keys, self.noise_names = list(spec.observation), list(spec.noise)
        self.first = spec.n_obs_steps - 1

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        obs = dict(zip(self.obs_keys, inputs[: len(self.obs_keys)], strict=True))
        rest = inputs[len(self.obs_keys):]
        noise = dict(zip(self.noise_names, rest[: len(self.noise_names)], strict=True))
        prefix = rest[len(self.noise_names):]  # (prefix, prefix_mask) or nothing
        return self.policy.action_chunk(obs, None, noise, *prefix)[:, self.first:]


def graph_input_names(spec: PolicySpec) -> list[str]:
    return [*spec.observation, *spec.noise, *((PREFIX_KEY, PREFIX_MASK_KEY) if spec.max_prefix_steps else ())]


def _export_program(graph: ChunkGraph, spec: PolicySpec, batch_size: int = 2) -> torch.export.ExportedProgram:
    inputs = example_inputs(spec, batch_size)
    args = tuple(torch.from_numpy(inputs[name]) for name in graph_input_names(spec))
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(graph, args, dynamic_shapes=(tuple({0: batch} for _ in args),))


def export_policy(policy, spec: PolicySpec, out: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Write the policy's graph to ``out`` (written beside it under a temporary name, then renamed) and return it."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}; got {fmt!r}")
    out = Path(out)
    policy = policy.to("cpu").eval()
    graph = ChunkGraph(policy, spec).eval()
    # torch's exporter warns about its own internals (a missing torchvision, a deprecated pytree call): not ours.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore", FutureWarning)
        program = _export_program(graph, spec)
        if fmt == "pt2":
            torch.export.save(program, tmp, extra_files={SPEC_METADATA_KEY: spec.to_json()})
        else:
            import onnx

            onnx_program = torch.onnx.export(program, input_names=graph_input_names(spec),
                                             output_names=["action"], opset_version=OPSET, dynamo=True,
                                             external_data=False, verbose=False)
            model = onnx_program.model_proto
            onnx.helper.set_model_props(model, {SPEC_METADATA_KEY: spec.to_json()})
            onnx.save_model(model, tmp)
    return out


def check_parity(policy, spec: PolicySpec, path: str | os.PathLike, batch_sizes=(1, 3), seed: int = 0,
                 ) -> tuple[float, float]:
    """Max abs difference between the exported file (onnxruntime, or the loaded ExportedProgram) and the torch
    policy's ``action_chunk`` on random observations, noise (and prefixes), over the given batch sizes: in data units
    and in the normalised units the network produces (data units times the action normaliser's scale).

    The tolerance applies to the normalised units: a float32 graph agrees with another to about 1e-6 relative,
    and actions in pixels (PushT's reach 512, where one float32 step is 3e-5 to 6e-5) would make a data-unit
    tolerance of 1e-4 a test of rounding rather than of the export."""
    path = Path(path)
    if path.suffix == ".onnx":
        from drifting_policy.deploy.onnx_policy import OnnxPolicy

        run = OnnxPolicy(path).run
    else:
        module = torch.export.load(path).module()

        def run(inputs):
            with torch.no_grad():
                return module(*(torch.from_numpy(inputs[name]) for name in graph_input_names(spec))).numpy()
    scale = policy.normalizer["action"].scale.detach().cpu().abs().numpy()
    worst_data = worst_normalized = 0.0
    for i, batch_size in enumerate(batch_sizes):
        inputs = example_inputs(spec, batch_size, seed + i)
        obs = {key: torch.from_numpy(inputs[key]) for key in spec.observation}
        noise = {name: torch.from_numpy(inputs[name]) for name in spec.noise}
        padded = [torch.from_numpy(inputs[name]) for name in (PREFIX_KEY, PREFIX_MASK_KEY) if name in inputs]
        with torch.no_grad():
            expected = policy.action_chunk(obs, None, noise, *padded)[:, spec.n_obs_steps - 1:].cpu().numpy()
        got = run(inputs)
        if got.shape != expected.shape:
            raise ValueError(f"{path}: the exported graph returned {got.shape} for batch {batch_size}, torch "
                             f"{expected.shape}")
        difference = np.abs(got.astype(np.float64) - expected)
        worst_data = max(worst_data, float(difference.max()))
        worst_normalized = max(worst_normalized, float((difference * scale).max()))
    return worst_data, worst_normalized


def read_pt2_spec(path: str | os.PathLike) -> PolicySpec:
    extra = {SPEC_METADATA_KEY: ""}
    torch.export.load(path, extra_files=extra)
    return PolicySpec.from_dict(json.loads(extra[SPEC_METADATA_KEY]))
