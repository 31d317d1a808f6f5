"""Action-chunk inference latency: drifting (1 NFE) vs DDPM-100 vs DDIM-10 on the same network.

The network is Diffusion Policy's low-dim PushT U-Net (down_dims 256/512/1024 unless ``--down-dims`` says
otherwise, 20-D observations, To = 2, T = 16, Da = 2). Each case times ``predict_action`` (normalisation and
slicing included) under ``torch.inference_mode``, repeated until ``--repeats`` runs or ``--budget-s`` seconds (at
least one run), and reports the median. Before the cases of a batch size each network is warmed up with one
evaluation (the DDPM network through a 1-step DDIM call, so a slow DDPM-100 case is not run twice).

    python benchmarks/policy_latency.py                      # CPU, and CUDA when available
    python benchmarks/policy_latency.py --devices cpu --batch-sizes 1
    python benchmarks/policy_latency.py --down-dims 32 64 128   # the network of configs/experiment/pusht_cpu.yaml
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from drifting_policy.normalizer import LinearNormalizer
from drifting_policy.policies import DiffusionPolicy, DiffusionPolicyConfig, DriftingPolicy, DriftingPolicyConfig

PUSHT_LOWDIM = dict(obs_dim=20, action_dim=2, horizon=16, n_obs_steps=2, n_action_steps=8,
                    diffusion_step_embed_dim=256)
CASES = (("drifting 1-NFE", None, None), ("DDIM-10", "ddim", 10), ("DDPM-100", "ddpm", 100))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(devices) -> str:
    lines = [f"CPU: {cpu_model()} ({os.cpu_count()} logical cores), torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}, python {platform.python_version()}"]
    if hasattr(os, "getloadavg"):
        lines.append("load average (1/5/15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if "cuda" in devices:
        lines.append(f"GPU: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


def build_policies(device: str, down_dims: tuple) -> dict:
    normalizer = LinearNormalizer()
    normalizer.fit({"obs": torch.randn(1000, 20), "action": torch.randn(1000, 2)})
    torch.manual_seed(0)
    drifting = DriftingPolicy(DriftingPolicyConfig(**PUSHT_LOWDIM, down_dims=down_dims))
    diffusion = DiffusionPolicy(DiffusionPolicyConfig(**PUSHT_LOWDIM, down_dims=down_dims))
    for policy in (drifting, diffusion):
        policy.set_normalizer(normalizer)
        policy.to(device).eval()
    return {"drifting": drifting, "diffusion": diffusion}


def time_case(policy, obs, device, repeats, budget_s) -> list[float]:
    def once() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        policy.predict_action(obs)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with torch.inference_mode():
        times = []
        while len(times) < repeats and (not times or sum(times) < budget_s):
            times.append(once())
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=20.0, help="stop repeating a case after this much time")
    parser.add_argument("--down-dims", type=int, nargs="+", default=[256, 512, 1024],
                        help="U-Net widths (DP's default; 32 64 128 is the PushT CPU experiment's network)")
    args = parser.parse_args(argv)

    print(machine_info(args.devices))
    down_dims = tuple(args.down_dims)
    print(f"network: PushT low-dim ConditionalUnet1D, down_dims {down_dims}, obs 20-D x To=2, T=16, Da=2")
    print(f"{'device':<6} {'batch':>5}  {'method':<15} {'median ms':>11} {'runs':>4} {'x drifting':>10}")
    for device in args.devices:
        policies = build_policies(device, down_dims)
        for batch in args.batch_sizes:
            obs = {"obs": torch.randn(batch, 2, 20, device=device)}
            with torch.inference_mode():  # warm-up: one network evaluation each
                policies["drifting"].predict_action(obs)
                policies["diffusion"].set_sampler("ddim", 1)
                policies["diffusion"].predict_action(obs)
            medians = {}
            for name, sampler, steps in CASES:
                policy = policies["drifting"] if sampler is None else policies["diffusion"]
                if sampler is not None:
                    policy.set_sampler(sampler, steps)
                times = time_case(policy, obs, device, args.repeats, args.budget_s)
                medians[name] = statistics.median(times) * 1e3
                ratio = medians[name] / medians["drifting 1-NFE"]
                print(f"{device:<6} {batch:>5}  {name:<15} {medians[name]:>11.2f} {len(times):>4} {ratio:>9.1f}x",
                      flush=True)


if __name__ == "__main__":
    main()
