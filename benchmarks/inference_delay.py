"""Acting while thinking, measured: PushT's score and smoothness under an inference delay of d control steps.

For each policy, delay d and hand-over mode (``drifting_policy.deploy.runtime``: sync, replace, ensemble,
best_of_n, and prefix for a policy trained with ``max_prefix_delay``), the control loop drives PushT's test
episodes with the chunk for observation k available at step k + d (``delay_steps``: simulation steps, so the
numbers do not depend on the machine's load). Chunks come through the server's request handling in this process
(``LocalClient``, onnxruntime backend), with the noise generator reseeded for every cell. A new chunk is requested
every Ta steps (max(Ta, d) with one request in flight).

Reported per cell: the mean score; the score within the episode's wall time (executed plus idle steps below
``--wall-steps``, PushT's 300-step limit: what a synchronous robot, which stands still while it waits, reaches in
the time the others had); the mean squared jerk of the executed actions (third difference per step, pixels);
the largest and the mean jump ||a_t - a_(t-1)|| at the steps where a new chunk took over (pixels; the mean step
is given for scale); underruns (steps with no action queued: the last one is held).

    python benchmarks/inference_delay.py                                    # the table and plot in docs
    python benchmarks/inference_delay.py --episodes 5 --delays 0 4 --modes replace prefix   # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from drifting_policy.deploy.export import export_policy, policy_spec  # noqa: E402
from drifting_policy.deploy.load import load_torch_policy  # noqa: E402
from drifting_policy.deploy.onnx_policy import OnnxPolicy  # noqa: E402
from drifting_policy.deploy.runtime import MODES, ControlLoop, score_within, summarize  # noqa: E402
from drifting_policy.deploy.server import LocalClient  # noqa: E402
from drifting_policy.deploy.tasks import task_env  # noqa: E402
from policy_latency import machine_info  # noqa: E402  (this folder is on the path when run as a script)

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_POLICIES = [f"plain={PRETRAINED / 'pusht_lowdim_drifting'}",
                    f"prefix={PRETRAINED / 'pusht_lowdim_drifting_prefix'}"]
COLUMNS = ("score", "score_wall", "mean_squared_jerk", "max_handover_jump", "mean_handover_jump", "mean_step",
           "underruns")


def onnx_policy(checkpoint: str, workdir: Path) -> OnnxPolicy:
    policy, cfg, name = load_torch_policy(checkpoint)
    spec = policy_spec(policy, cfg, name)
    return OnnxPolicy(export_policy(policy, spec, workdir / f"{name}.onnx"), threads=1)


def run_cell(backend: OnnxPolicy, env, seeds: list[int], mode: str, delay: int, args) -> dict:
    backend.rng = np.random.default_rng(args.noise_seed)  # every cell draws the same noise stream
    loop = ControlLoop(LocalClient(backend, backend.spec), mode=mode, delay_steps=delay, candidates=args.candidates)
    results = [loop.run_episode(env, seed) for seed in seeds]
    summary = summarize(results)
    return {"score": summary["mean_score"],
            "score_wall": float(np.mean([score_within(r, args.wall_steps) for r in results])),
            **{key: summary[key] for key in COLUMNS[2:]}, "chunks": summary["chunks"],
            "idle_steps": summary["idle_steps"], "steps": summary["steps"]}


def table(rows: list[dict]) -> str:
    lines = ["| policy | mode | d | score | score in wall time | mean sq. jerk | max hand-over jump | "
             "mean hand-over jump | mean step | underruns |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['mode']} | {r['delay']} | {r['score']:.3f} | {r['score_wall']:.3f} | "
                     f"{r['mean_squared_jerk']:.2f} | {r['max_handover_jump']:.1f} | {r['mean_handover_jump']:.1f} | "
                     f"{r['mean_step']:.1f} | {r['underruns']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    panels = (("score", "score"), ("score_wall", "score within the wall time"),
              ("max_handover_jump", "largest hand-over jump (px)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    lines = sorted({(r["policy"], r["mode"]) for r in rows})
    policies = sorted({policy for policy, _ in lines})
    for ax, (key, title) in zip(axes, panels, strict=True):
        for policy, mode in lines:
            cell = sorted((r for r in rows if r["policy"] == policy and r["mode"] == mode), key=lambda r: r["delay"])
            ax.plot([r["delay"] for r in cell], [r[key] for r in cell], marker="os^"[policies.index(policy) % 3],
                    color=f"C{MODES.index(mode)}", linestyle=("-", "--", ":")[policies.index(policy) % 3],
                    label=f"{policy} / {mode}")
        ax.set_xlabel("inference delay d (control steps)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", action="append", help="NAME=CHECKPOINT (repeatable; default: the shipped "
                        "plain and prefix PushT policies)")
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 1, 2, 4, 6])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--episodes", type=int, default=50, help="test episodes (seeds from --seed)")
    parser.add_argument("--seed", type=int, default=100000, help="first test seed (DP's start at 100000)")
    parser.add_argument("--candidates", type=int, default=16, help="best_of_n: chunks drawn per request")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--wall-steps", type=int, default=300, help="the episode's wall time in control steps")
    parser.add_argument("--out", default="outputs/inference_delay", help="results.json, table.md, plot.png")
    parser.add_argument("--merge", action="store_true", help="keep the rows of other policies already in "
                        "--out/results.json (to run the policies one at a time, e.g. in parallel)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    names = [item.partition("=")[0] for item in args.policy or DEFAULT_POLICIES]
    rows, headers = [], []
    if args.merge and (out / "results.json").is_file():
        previous = json.loads((out / "results.json").read_text())
        rows = [row for row in previous["rows"] if row["policy"] not in names]
        headers = [previous["header"]] if rows else []
    with tempfile.TemporaryDirectory() as workdir:
        for item in args.policy or DEFAULT_POLICIES:
            name, _, checkpoint = item.partition("=")
            backend = onnx_policy(checkpoint, Path(workdir))
            spec = backend.spec
            env_fn, seeds = task_env(spec.task, spec, args.episodes, args.seed)
            env = env_fn()
            modes = [m for m in args.modes if m != "prefix" or spec.max_prefix_steps]
            cells = [(d, m) for d in args.delays for m in modes]
            for delay, mode in tqdm(cells, desc=f"{name} ({spec.name})"):
                rows.append({"policy": name, "checkpoint": checkpoint, "mode": mode, "delay": delay,
                             **run_cell(backend, env, seeds, mode, delay, args)})
            env.close()
    header = (f"python benchmarks/inference_delay.py {' '.join(argv if argv is not None else os.sys.argv[1:])}\n"
              f"{datetime.datetime.now().isoformat(timespec='minutes')}, {args.episodes} test episodes from seed "
              f"{args.seed}, {time.time() - started:.0f} s\n{machine_info(['cpu'])}")
    header = "\n\n".join([*headers, header])
    rows.sort(key=lambda r: (r["policy"], r["delay"], MODES.index(r["mode"])))
    text = f"{header}\n\n{table(rows)}\n"
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    plot(rows, out / "plot.png")
    print(text)
    print(f"wrote {out / 'table.md'}, {out / 'results.json'} and {out / 'plot.png'}")


if __name__ == "__main__":
    main()
