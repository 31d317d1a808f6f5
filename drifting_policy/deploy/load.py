"""A checkpoint for deployment: the policy (torch or onnxruntime) behind one ``predict`` and its spec."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from drifting_policy.deploy.export import export_policy, policy_spec
from drifting_policy.deploy.onnx_policy import OnnxPolicy
from drifting_policy.deploy.spec import PolicySpec

BACKENDS = ("torch", "onnx")


class TorchBackend:
    """``predict(obs, noise, prefix) -> (B, T - To + 1, Da)``, the chunk from the current step, on numpy arrays with
    the torch policy's ``predict_action``."""

    def __init__(self, policy, device: str | torch.device = "cpu"):
        self.policy = policy.to(device).eval()
        self.device = torch.device(device)

    def predict(self, obs: dict[str, np.ndarray], noise: dict[str, np.ndarray] | None = None,
                prefix: np.ndarray | None = None) -> np.ndarray:
        with torch.no_grad():
            obs_t = {key: torch.from_numpy(value).to(self.device) for key, value in obs.items()}
            noise_t = None if noise is None else {k: torch.from_numpy(v).to(self.device) for k, v in noise.items()}
            if prefix is not None and not prefix.size:
                prefix = None  # nothing committed
            chunk = self.policy.predict_action(obs_t, noise=noise_t, prefix=prefix)["action_pred"]
            return chunk[:, self.policy.config.n_obs_steps - 1:].cpu().numpy()


def load_torch_policy(checkpoint: str | Path, which: str = "last"):
    """(policy, run config, name) for a run folder, a pretrained folder or a .ckpt file, as ``eval`` loads them."""
    from drifting_policy.evaluate import find_policy_source, load_policy

    source = find_policy_source(Path(checkpoint), which)
    policy, cfg = load_policy(source, {})
    source = source.resolve()
    in_run = source.parent.name == "pretrained" and source.name in ("last", "best")  # <run>/pretrained/last
    name = source.parent.parent.name if in_run else source.stem if source.is_file() else source.name
    return policy.eval(), cfg, name


def load_backend(checkpoint: str | Path, backend: str = "torch", device: str = "cpu", seed: int | None = None,
                 which: str = "last", threads: int | None = None):
    """(backend with ``predict``, spec). An ``.onnx`` file runs on onnxruntime; a torch checkpoint runs on torch,
    or with ``backend='onnx'`` is exported to a temporary ONNX file first. ``threads``: intra-op threads."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    path = Path(checkpoint)
    if path.suffix == ".onnx":
        if backend != "onnx":
            raise ValueError(f"{path} is an ONNX file; serve it with backend=onnx")
        policy = OnnxPolicy(path, seed=seed, threads=threads)
        return policy, policy.spec
    if seed is not None:
        torch.manual_seed(seed)
    policy, cfg, name = load_torch_policy(path, which)
    spec: PolicySpec = policy_spec(policy, cfg, name)
    if backend == "torch":
        return TorchBackend(policy, device), spec
    onnx_path = Path(tempfile.mkdtemp(prefix="drifting-policy-")) / f"{name}.onnx"
    export_policy(policy, spec, onnx_path, "onnx")
    onnx_policy = OnnxPolicy(onnx_path, seed=seed, threads=threads)
    return onnx_policy, onnx_policy.spec
