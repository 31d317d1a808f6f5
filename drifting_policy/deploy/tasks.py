"""A task's simulator for the control runtime, built from its task config as ``eval`` builds its env runner."""
from __future__ import annotations

from collections.abc import Callable

import hydra
from omegaconf import OmegaConf

from drifting_policy.config import CONFIG_DIR
from drifting_policy.deploy.spec import PolicySpec


def task_env(task: str, spec: PolicySpec, episodes: int, first_seed: int) -> tuple[Callable, list[int]]:
    """(a factory of one bare env of ``task``, the seeds of ``episodes`` test episodes from ``first_seed``)."""
    from drifting_policy.evaluate import runner_key

    path = CONFIG_DIR / "task" / f"{task}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
        raise SystemExit(f"no task config {path}; tasks: {', '.join(names)}")
    task_cfg = OmegaConf.load(path)
    horizons = {"horizon": spec.horizon, "n_obs_steps": spec.n_obs_steps, "n_action_steps": spec.n_action_steps}
    cfg = OmegaConf.merge({"task": task_cfg}, {"task": horizons}, horizons)  # DP's ${n_obs_steps} aliases too
    overrides = [f"{runner_key(cfg.task.env_runner, key)}={value}"
                 for key, value in (("n_test", episodes), ("n_train", 0), ("test_start_seed", first_seed))]
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    runner = hydra.utils.instantiate(cfg.task.env_runner, n_envs=1, vectorization="sync", show_progress=False)
    try:
        seeds = [episode.seed for episode in runner.episodes if episode.prefix == "test"]
        return runner.env_fn, seeds
    finally:
        runner.close()
