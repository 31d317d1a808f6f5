"""The ``drifting-policy`` command.

    drifting-policy train task=pusht_lowdim policy=drifting_unet [key=value ...]
    drifting-policy train run_dir=<existing run> [key=value ...]     # resume it, with its saved config
    torchrun --nproc_per_node=4 -m drifting_policy.cli train task=... policy=... run_dir=<dir>
    drifting-policy eval checkpoint=<run dir | pretrained dir | .ckpt> [n_test=50] [device=cuda] [output_dir=...]
    drifting-policy report <run dirs or folders of runs ...> [--last 10] [--key test/mean_score]

``train`` overrides use hydra's syntax against configs/train.yaml; ``eval`` takes dotted keys of the run's config
(``task.env_runner.n_envs=8``) and, as a shorthand, env-runner arguments without a dot (``n_test=50``).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

USAGE = __doc__


def claim_new_dir(base: str) -> str:
    """Create and return ``base``, or ``base_2``, ``base_3``, ... if taken: two runs started in the same second
    must not share a directory (the second would resume the first's checkpoints)."""
    for n in range(1, 1000):
        path = base if n == 1 else f"{base}_{n}"
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: 999 run directories of that name exist already")


def train(overrides: list[str]) -> None:
    from drifting_policy.config import compose_train_config, load_config
    from drifting_policy.workspace import TrainWorkspace

    keys = {item.split("=", 1)[0].lstrip("+~") for item in overrides}
    run_dir = next((item.split("=", 1)[1] for item in overrides if item.startswith("run_dir=")), None)
    saved = Path(run_dir) / ".hydra" / "config.yaml" if run_dir else None
    if saved is not None and saved.exists() and not keys & {"task", "policy"}:
        # Resuming a run as it was configured; overrides (e.g. training.num_epochs=...) apply on top.
        cfg = OmegaConf.merge(load_config(saved), OmegaConf.from_dotlist(
            [item for item in overrides if not item.startswith("run_dir=")]))
        choices = {}
    else:
        cfg, choices = compose_train_config(overrides)
    if cfg.get("run_dir") is None:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ValueError("with several processes, name the run directory: run_dir=<dir> (every rank must agree)")
        stamp = time.strftime("%Y.%m.%d/%H.%M.%S")
        cfg.run_dir = claim_new_dir(f"outputs/{stamp}_{choices.get('policy', 'policy')}_{choices.get('task', cfg.task.name)}")
    run_info = {key: choices[key] for key in ("task", "policy") if key in choices}
    TrainWorkspace(cfg, cfg.run_dir, run_info=run_info).run()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        train(rest)
    elif command == "eval":
        from drifting_policy.evaluate import evaluate

        evaluate(rest)
    elif command == "report":
        from drifting_policy.report import main as report

        report(rest)
    else:
        raise SystemExit(f"unknown command {command!r}; expected train, eval or report\n{USAGE}")


if __name__ == "__main__":
    main()
