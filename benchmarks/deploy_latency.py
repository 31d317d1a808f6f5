"""Deployment latency per action chunk at batch 1, and the highest control rate the runtime sustains.

Two networks: the shipped PushT policy (``pretrained/pusht_lowdim_drifting``, U-Net 32/64/128) and Diffusion
Policy's full-size low-dim U-Net (256/512/1024, random weights, the shipped policy's shapes and normaliser). For
each: the drifting policy in torch eager (``predict_action``), on onnxruntime (the exported graph), and through the
policy server on loopback (``PolicyClient.infer``, torch and onnx backends), p50 and p99 over ``--calls`` calls
after warm-up; then DDPM-100 on the same network in torch eager as the reference (``--reference-calls``, because
one call takes 100 network evaluations). Then the control runtime drives PushT through the loopback server at
rising rates (``mode=replace``, both backends), counting deadline misses and queue underruns. Everything runs in
one process with ``--threads`` intra-op threads (default 1: with more, torch's worker threads compete with the
server's event loop and the client for the cores, which on 2 cores more than doubled the round trip).

    python benchmarks/deploy_latency.py
    python benchmarks/deploy_latency.py --calls 50 --reference-calls 2 --rates 10 50   # a quick look
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from drifting_policy.deploy.client import PolicyClient
from drifting_policy.deploy.export import export_policy, policy_spec
from drifting_policy.deploy.load import TorchBackend, load_torch_policy
from drifting_policy.deploy.onnx_policy import OnnxPolicy
from drifting_policy.deploy.runtime import ControlLoop, summarize
from drifting_policy.deploy.server import PolicyServer
from drifting_policy.deploy.spec import example_inputs
from drifting_policy.deploy.tasks import task_env
from drifting_policy.policies import DiffusionPolicy, DiffusionPolicyConfig, DriftingPolicy, DriftingPolicyConfig
from policy_latency import machine_info  # this folder is on the path when run as a script

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "pusht_lowdim_drifting"


def timed(fn, calls: int) -> np.ndarray:
    fn()  # warm-up
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times * 1e3


def same_shapes(policy, down_dims, policy_class, config_class):
    """A policy of ``policy``'s task shapes with another U-Net width (random weights, the same normaliser)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    keep = {k: v for k, v in policy.config.to_dict().items() if k in names}
    torch.manual_seed(0)
    other = policy_class(config_class(**{**keep, "down_dims": tuple(down_dims)}))
    other.set_normalizer(policy.normalizer)
    return other.eval()


def latency_rows(name: str, policy, cfg, calls: int, reference_calls: int, workdir: Path) -> list[tuple]:
    spec = policy_spec(policy, cfg, name)
    inputs = example_inputs(spec, 1)
    obs_np = {key: inputs[key] for key in spec.observation}
    obs_t = {key: torch.from_numpy(value) for key, value in obs_np.items()}
    onnx_policy = OnnxPolicy(export_policy(policy, spec, workdir / f"{name}.onnx"), threads=torch.get_num_threads())
    rows = []
    with torch.inference_mode():
        rows.append(("drifting 1-NFE, torch eager", timed(lambda: policy.predict_action(obs_t), calls)))
    rows.append(("drifting 1-NFE, onnxruntime", timed(lambda: onnx_policy.predict_action(obs_np), calls)))
    request = {key: value[0] for key, value in obs_np.items()}
    for backend_name, backend in (("torch", TorchBackend(policy)), ("onnxruntime", onnx_policy)):
        with PolicyServer(backend, spec, port=0, quiet=True).start_in_thread() as handle, \
                PolicyClient(handle.uri) as client:
            rows.append((f"drifting 1-NFE, server round trip ({backend_name})",
                         timed(lambda: client.infer(request), calls)))
    ddpm = same_shapes(policy, policy.config.down_dims, DiffusionPolicy, DiffusionPolicyConfig)
    ddpm.set_sampler("ddpm", 100)
    with torch.inference_mode():
        rows.append(("DDPM-100, torch eager (reference)", timed(lambda: ddpm.predict_action(obs_t), reference_calls)))
    return rows


def print_latency_table(title: str, rows: list[tuple]) -> None:
    base = np.percentile(rows[0][1], 50)
    print(f"\n{title}\n")
    print("| inference | calls | p50 ms | p99 ms | p50 / drifting eager p50 |")
    print("| --- | --- | --- | --- | --- |")
    for label, times in rows:
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        print(f"| {label} | {len(times)} | {p50:.2f} | {p99:.2f} | {p50 / base:.2f}x |", flush=True)


def control_rates(policy, cfg, rates: list[float], steps: int, backend_name: str, workdir: Path) -> None:
    spec = policy_spec(policy, cfg, "pusht_lowdim_drifting")
    backend = TorchBackend(policy) if backend_name == "torch" else OnnxPolicy(
        export_policy(policy, spec, workdir / "control.onnx"), threads=torch.get_num_threads())
    env_fn, (seed, *_) = task_env(spec.task, spec, 1, 100000)
    env = env_fn()
    start = time.perf_counter()
    env.reset(seed=seed)
    for _ in range(50):
        env.step(env.action_space.sample())
    step_ms = (time.perf_counter() - start) / 50 * 1e3
    print(f"\nControl runtime, PushT through the loopback server ({backend_name} backend), mode=replace, {steps} "
          f"steps per rate; one env.step of PushT takes {step_ms:.2f} ms\n")
    print("| rate asked (Hz) | achieved (Hz) | deadline misses | underruns | dropped actions | chunks | "
          "round trip p50 / p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    best, clean_so_far = None, True
    with PolicyServer(backend, spec, port=0, quiet=True).start_in_thread() as handle, \
            PolicyClient(handle.uri) as client:
        for rate in rates:
            loop = ControlLoop(client, rate_hz=rate, mode="replace")
            result = summarize([loop.run_episode(env, seed, max_steps=steps)])
            loop.close()
            print(f"| {rate:g} | {result['achieved_rate_hz']:.1f} | {result['deadline_misses']} | "
                  f"{result['underruns']} | {result['dropped_actions']} | {result['chunks']} | "
                  f"{result['round_trip_ms_p50']:.1f} / {result['round_trip_ms_p99']:.1f} |", flush=True)
            clean_so_far = clean_so_far and result["deadline_misses"] == 0 and result["underruns"] == 0
            best = rate if clean_so_far else best
    env.close()
    print(f"\nhighest rate sustained (no deadline miss and no underrun at it and every lower rate): {best:g} Hz"
          if best else "\nthe lowest rate already had deadline misses or underruns")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(SHIPPED))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--reference-calls", type=int, default=5)
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 20, 50, 100, 200, 400])
    parser.add_argument("--steps", type=int, default=200, help="control steps per rate")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of torch and onnxruntime (a control computer gives a policy a core)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_info(["cpu"]))
    print(time.strftime("%Y-%m-%d %H:%M"), f"| command: python benchmarks/deploy_latency.py --calls {args.calls} "
          f"--reference-calls {args.reference_calls} --rates {' '.join(f'{r:g}' for r in args.rates)} "
          f"--steps {args.steps} --threads {args.threads}")
    shipped, cfg, _ = load_torch_policy(args.checkpoint)
    full = same_shapes(shipped, (256, 512, 1024), DriftingPolicy, DriftingPolicyConfig)
    with tempfile.TemporaryDirectory() as workdir:
        for name, policy in (("shipped PushT policy, U-Net 32/64/128", shipped),
                             ("DP's full-size U-Net 256/512/1024 (random weights)", full)):
            n_params = sum(p.numel() for p in policy.model.parameters()) / 1e6
            rows = latency_rows(name.split(",")[0].replace(" ", "_").replace("'", ""), policy, cfg, args.calls,
                                args.reference_calls, Path(workdir))
            print_latency_table(f"{name}: {n_params:.2f}M network parameters, batch 1", rows)
        for backend_name in ("torch", "onnxruntime"):
            control_rates(shipped, cfg, args.rates, args.steps, backend_name, Path(workdir))


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()
