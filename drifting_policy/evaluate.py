"""Evaluating a trained policy with its task's env runner (``drifting-policy eval``).

``checkpoint`` may be
* a run directory: its ``pretrained/best`` (or ``pretrained/last``) export;
* an exported policy directory (``config.json`` + ``model.safetensors``), loaded with the policy class's
  ``from_pretrained``; the task comes from the ``train_config.yaml`` the workspace writes beside it, or from
  ``task=<name> method=<name> network=<name>`` for directories exported elsewhere;
* a ``.ckpt`` file of a run: the policy is built from the saved config and given the EMA weights.

Results (``eval_log.json``, videos) go to ``output_dir``, by default ``<run>/eval/<name>``, or
``outputs/eval/<name>`` for a policy that is not inside a run folder.

``seed`` (default: the run's ``training.rollout_seed``, as its in-training rollouts used) seeds the policy's
sampling noise: the same checkpoint, seed and episodes give the same score. Weights holding NaN or inf are refused
when loaded, and the runner stops on a non-finite action rather than score it.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from drifting.checkpoint import CheckpointError, check_finite_weights
from drifting.checkpoint import load as load_checkpoint
from drifting.files import atomic_write_text
from drifting.json_log import numeric_items
from drifting.runs import resolve_device, seeded_rng
from drifting_policy.config import compose_train_config, device_problem, first_line, instantiate, load_config
from drifting_policy.errors import ConfigError

# Keys of `eval` itself; any other key without a dot is an env-runner argument (n_test=50 ->
# task.env_runner.n_test, or task.env_runner.episodes.n_test where the runner takes its episodes from a factory:
# see `runner_key`).
EVAL_KEYS = ("checkpoint", "output_dir", "device", "which", "task", "method", "network", "seed")
WHICH = ("best", "last")  # a run directory's exports
HINT = ("eval takes checkpoint=<run | export | .ckpt>, which=best|last, seed=<int>, device=, output_dir=, task=, "
        "method=, network= and the env runner's arguments (n_test=50, ...)")


def split_overrides(overrides: list[str]) -> tuple[dict, list[str]]:
    """``key=value`` strings into eval's own options and config overrides (dotted, or bare runner keys)."""
    options, rest = {}, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"eval: expected key=value, got {item!r}", hint=HINT)
        key, value = item.split("=", 1)
        if key in EVAL_KEYS:
            options[key] = value
        else:
            rest.append(item)
    if "checkpoint" not in options:
        raise ConfigError("eval needs checkpoint=<run dir | pretrained dir | .ckpt file>", hint=HINT)
    if options.get("which", "best") not in WHICH:
        raise ConfigError(f"which={options['which']}: must be one of {', '.join(WHICH)} (the run's exports)",
                          hint=HINT)
    if "seed" in options and not options["seed"].lstrip("-").isdigit():
        raise ConfigError(f"seed={options['seed']}: must be an integer", hint=HINT)
    problem = device_problem(options.get("device", "auto"))
    if problem:
        raise ConfigError(f"device={options['device']}: {problem}", hint=HINT)
    return options, rest


def runner_key(runner_cfg: DictConfig, key: str) -> str:
    """The dotted path of a bare env-runner argument: the shallowest place in task.env_runner that has ``key``
    (``n_envs`` is the runner's own, ``n_test`` may sit in its ``episodes`` block, ``n_train`` deeper still)."""
    level = [("task.env_runner", runner_cfg)]
    while level:
        found = [f"{path}.{key}" for path, node in level if key in node]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(f"eval: runner argument {key!r} is ambiguous: {', '.join(found)}; give the dotted path",
                              hint=HINT)
        level = [(f"{path}.{name}", value) for path, node in level for name, value in node.items_ex(resolve=False)
                 if isinstance(value, DictConfig)]
    raise ConfigError(f"eval: runner argument {key!r} is nowhere in task.env_runner; its keys: "
                      f"{', '.join(map(str, runner_cfg.keys()))}", hint=HINT)


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``cfg`` with dotted ``key=value`` overrides merged in; bare keys are resolved with `runner_key`."""
    dotted = []
    for item in overrides:
        key, value = item.split("=", 1)
        dotted.append(item if "." in key else f"{runner_key(cfg.task.env_runner, key)}={value}")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotted))


def find_policy_source(path: Path, which: str = "best") -> Path:
    """A run directory resolves to its exported policy (``which``, else the other one); other paths are returned
    as they are."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir() and not (path / "config.json").exists():
        for name in (which, *(other for other in WHICH if other != which)):
            candidate = path / "pretrained" / name
            if (candidate / "config.json").exists():
                return candidate
        raise FileNotFoundError(f"{path}: neither an exported policy (config.json) nor a run directory with "
                                "pretrained/best or pretrained/last")
    return path


def run_root(source: Path) -> Path | None:
    """The run directory a checkpoint or export lives in, if any."""
    for parent in (source.parent, source.parent.parent):
        if (parent / ".hydra" / "config.yaml").exists():
            return parent
    return None


def load_policy(source: Path, options: dict) -> tuple[torch.nn.Module, DictConfig]:
    """The policy (EMA weights) and the run config it was trained with."""
    if source.is_file():
        state = load_checkpoint(source)
        if "cfg" not in state or "policy" not in state:
            raise CheckpointError(f"{source}: not a training checkpoint of this project (no 'cfg' or 'policy')")
        cfg = OmegaConf.create(state["cfg"])
        policy = instantiate(cfg.policy, f"{source}: policy")
        weights = state["ema"]["model"] if state.get("ema") else state["policy"]
        check_finite_weights(weights, source)
        try:
            policy.load_state_dict(weights)
        except RuntimeError as error:
            raise CheckpointError(f"{source}: the weights do not fit its policy ({first_line(error)})") from error
    else:
        if (source / "train_config.yaml").exists():
            cfg = load_config(source / "train_config.yaml")
        elif {"task", "method", "network"} <= set(options):
            cfg, _ = compose_train_config([f"{key}={options[key]}" for key in ("task", "method", "network")])
        else:
            raise FileNotFoundError(f"{source} has no train_config.yaml; say which task and policy it is: "
                                    "task=<name> method=<name> network=<name>")
        policy_class = hydra.utils.get_object(cfg.policy._target_)
        if not hasattr(policy_class, "from_pretrained"):
            raise TypeError(f"policy._target_ {cfg.policy._target_} has no from_pretrained; cannot load {source}")
        policy = policy_class.from_pretrained(source)
        # Every policy class, not only BasePolicy's from_pretrained, is held to finite weights.
        check_finite_weights(policy.state_dict(), source)
    return policy, cfg


def evaluate(overrides: list[str]) -> dict:
    options, rest = split_overrides(overrides)
    source = find_policy_source(Path(options["checkpoint"]), options.get("which", "best"))
    policy, cfg = load_policy(source, options)
    cfg = apply_overrides(cfg, rest)
    device = resolve_device(options.get("device", "auto"))
    policy.to(device).eval()

    if "output_dir" in options:
        output_dir = Path(options["output_dir"])
    else:
        root = run_root(source)
        name = source.stem if source.is_file() else source.name
        # Outside a run (e.g. the shipped pretrained/ policies) results go under outputs/, not beside the policy.
        output_dir = root / "eval" / name if root else Path("outputs") / "eval" / name
    output_dir.mkdir(parents=True, exist_ok=True)

    seed = int(options.get("seed", OmegaConf.select(cfg, "training.rollout_seed", default=0)))
    runner = instantiate(cfg.task.env_runner, "task.env_runner", output_dir=str(output_dir))
    try:
        with torch.no_grad(), seeded_rng(seed):
            log = runner.run(policy)
    finally:
        if hasattr(runner, "close"):
            runner.close()

    result = {"checkpoint": str(source), "task": cfg.task.name, "seed": seed, **log}
    atomic_write_text(output_dir / "eval_log.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    print_results(result, output_dir)
    return result


def print_results(result: dict, output_dir: Path) -> None:
    numbers = numeric_items(result)
    episodes = {key: value for key, value in numbers.items() if "/sim_max_reward_" in key}
    for key in sorted(episodes, key=lambda k: (k.split("/")[0], int(k.rsplit("_", 1)[1]))):
        prefix, seed = key.split("/")[0], key.rsplit("_", 1)[1]
        print(f"  {prefix:5s} seed {seed:>7s}: {episodes[key]:.3f}")
    for key in sorted(k for k in numbers if k not in episodes and k != "seed"):
        print(f"{key}: {numbers[key]:.4f}")
    print(f"seed: {result['seed']} (the policy's sampling noise; the same seed gives the same score)")
    videos = [value for key, value in result.items() if "video" in key]
    print(f"wrote {output_dir / 'eval_log.json'}" + (f" and {len(videos)} videos" if videos else ""))
