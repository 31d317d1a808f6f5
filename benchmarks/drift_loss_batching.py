"""Drift loss on an image-branch-like workload: the batched core vs a per-group Python loop, side by side.

    python benchmarks/drift_loss_batching.py [--groups 64 --gen 64 --pos 64 --unc 16 --keys 120 --repeats 3 \
        --loop-repeats 1]

Workload: `--keys` feature keys with dims cycling over 64..640, each [groups, n, S] for generated samples,
positives and unconditional negatives (as `feature_drift_loss` receives them from the image branch).
"Batched" is one `feature_drift_loss` call (one core call per key, all groups at once). "Loop" calls the core
once per (key, group). Both compute value and gradient. On a GPU it also reports the batched time relative to
the time of the call's own matmuls (pairwise distances and the force products), i.e. the overhead factor.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from drifting import drift_loss, feature_drift_loss


def make_workload(groups, n_gen, n_pos, n_unc, keys, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    dims = [64 + (576 * i) // max(keys - 1, 1) // 64 * 64 for i in range(keys)]  # 64 .. 640
    make = lambda n, s: torch.randn(groups, n, s, generator=g).to(device)  # noqa: E731
    gen = {f"f{i}": make(n_gen, s).requires_grad_(True) for i, s in enumerate(dims)}
    pos = {f"f{i}": make(n_pos, s) for i, s in enumerate(dims)}
    neg = {f"f{i}": make(n_unc, s) for i, s in enumerate(dims)}
    weight_neg = torch.full((groups, n_unc), 0.5, device=device)
    return gen, pos, neg, weight_neg, dims


def batched(gen, pos, neg, weight_neg):
    loss, _ = feature_drift_loss(gen, pos, neg, weight_neg=weight_neg)
    loss.sum().backward()


def loop(gen, pos, neg, weight_neg):
    for key in gen:
        for b in range(gen[key].shape[0]):
            s = slice(b, b + 1)
            loss, _ = drift_loss(gen[key][s], pos[key][s], neg[key][s], weight_neg=weight_neg[s])
            loss.sum().backward()


def matmuls_only(gen, pos, neg, weight_neg):
    """The call's irreducible matrix products: distances to all targets, and the force product, per temperature."""
    with torch.no_grad():
        for key in gen:
            targets = torch.cat([gen[key], neg[key], pos[key]], dim=1)
            dots = torch.bmm(gen[key], targets.transpose(1, 2))
            for _ in range(3):
                torch.bmm(dots, targets)


def timed(fn, args, repeats, device):
    gen, pos, neg, weight_neg = args
    first = list(gen)[:2]
    fn({k: gen[k] for k in first}, {k: pos[k] for k in first}, {k: neg[k] for k in first}, weight_neg)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--pos", type=int, default=64)
    parser.add_argument("--unc", type=int, default=16)
    parser.add_argument("--keys", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the batched core (best is kept)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the loop (best is kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen, pos, neg, weight_neg, dims = make_workload(args.groups, args.gen, args.pos, args.unc, args.keys, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"workload: {args.keys} keys (dims {min(dims)}..{max(dims)}), {args.groups} groups x {args.gen} generated "
          f"vs {args.pos} positives + {args.unc} unconditional; value and gradient")
    t_batched = timed(batched, (gen, pos, neg, weight_neg), args.repeats, device)
    t_loop = timed(loop, (gen, pos, neg, weight_neg), args.loop_repeats, device)
    print(f"batched core      {t_batched * 1e3:10.1f} ms")
    print(f"per-group loop    {t_loop * 1e3:10.1f} ms")
    print(f"speed-up (loop / batched): {t_loop / t_batched:.1f}x")
    if device.type == "cuda":
        t_mm = timed(matmuls_only, (gen, pos, neg, weight_neg), args.repeats, device)
        print(f"matmuls only      {t_mm * 1e3:10.1f} ms   batched / matmuls: {t_batched / t_mm:.1f}x")


if __name__ == "__main__":
    main()
