"""``drifting-policy report``: the paper's numbers from several runs' ``logs.json.txt``.

Per run: the max of the metric over all its evaluations and the mean of its last ``last`` evaluations (Diffusion
Policy's protocol: max and average of the last 10 checkpoints). Runs are grouped by (task, policy) from their
``run_info.json`` (or ``.hydra/config.yaml``); each group shows mean ± std over its runs (seeds; std with ddof=0).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from drifting.json_log import bad_line_message, parse_json_log


@dataclass
class RunScores:
    run_dir: Path
    task: str
    policy: str
    scores: list[float]  # the metric at each evaluation, in order
    bad_lines: list[str]  # the log's unreadable lines, named (file:line), which were skipped

    def max(self) -> float:
        return float(np.max(self.scores))

    def last_mean(self, last: int) -> float:
        return float(np.mean(self.scores[-last:]))


def run_identity(run_dir: Path) -> tuple[str, str]:
    info_path = run_dir / "run_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        return str(info["task"]), str(info["policy"])
    config_path = run_dir / ".hydra" / "config.yaml"
    if config_path.exists():
        cfg = yaml.safe_load(config_path.read_text())
        return str(cfg["task"]["name"]), str(cfg["policy"]["_target_"]).rsplit(".", 1)[-1]
    raise FileNotFoundError(f"{run_dir}: no run_info.json or .hydra/config.yaml to tell its task and policy")


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run (it holds logs.json.txt) or a folder searched recursively for runs."""
    runs = []
    for path in map(Path, paths):
        if (path / "logs.json.txt").exists():
            runs.append(path)
        else:
            found = sorted(log.parent for log in path.rglob("logs.json.txt"))
            if not found:
                raise FileNotFoundError(f"{path}: no logs.json.txt in it or below it")
            runs.extend(found)
    return list(dict.fromkeys(runs))


def load_run(run_dir: Path, key: str) -> RunScores:
    task, policy = run_identity(run_dir)
    log_path = run_dir / "logs.json.txt"
    lines = parse_json_log(log_path)
    records = [line.record for line in lines if line.record is not None]
    scores = [float(record[key]) for record in records if record.get(key) is not None]
    bad_lines = [bad_line_message(log_path, line) for line in lines if line.record is None]
    return RunScores(run_dir, task, policy, scores, bad_lines)


def summarize(runs: list[RunScores], last: int = 10) -> list[dict]:
    """One row per (task, policy): mean and std over runs of each run's max and last-``last`` mean."""
    groups: dict[tuple[str, str], list[RunScores]] = {}
    for run in runs:
        if run.scores:
            groups.setdefault((run.task, run.policy), []).append(run)
    rows = []
    for (task, policy), members in sorted(groups.items()):
        maxes = [run.max() for run in members]
        lasts = [run.last_mean(last) for run in members]
        rows.append({"task": task, "policy": policy, "runs": len(members),
                     "evaluations": min(len(run.scores) for run in members),
                     "max_mean": float(np.mean(maxes)), "max_std": float(np.std(maxes)),
                     "last_mean": float(np.mean(lasts)), "last_std": float(np.std(lasts))})
    return rows


def format_table(rows: list[dict], key: str, last: int) -> str:
    header = f"{'task':<20} {'policy':<24} {'runs':>4} {'evals':>5}  {'max ' + key:<26} last-{last} mean"
    lines = [header, "-" * len(header)]
    previous_task = None
    for row in rows:
        task = row["task"] if row["task"] != previous_task else ""
        previous_task = row["task"]
        lines.append(f"{task:<20} {row['policy']:<24} {row['runs']:>4} {row['evaluations']:>5}  "
                     f"{row['max_mean']:.3f} ± {row['max_std']:.3f}{'':<12} "
                     f"{row['last_mean']:.3f} ± {row['last_std']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="drifting-policy report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding runs")
    parser.add_argument("--key", default="test/mean_score", help="metric in logs.json.txt (default %(default)s)")
    parser.add_argument("--last", type=int, default=10, help="how many final evaluations to average (default 10)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)

    try:
        runs = [load_run(run_dir, args.key) for run_dir in find_runs(args.runs)]
    except FileNotFoundError as error:
        parser.error(str(error))
    for run in runs:
        for message in run.bad_lines:
            print(f"warning: {message}", file=sys.stderr)
        if not run.scores:
            print(f"(no {args.key} in {run.run_dir / 'logs.json.txt'}; skipped)")
    rows = summarize(runs, args.last)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, args.key, args.last))
    return rows
