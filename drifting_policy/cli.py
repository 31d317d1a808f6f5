"""The ``drifting-policy`` command.

    drifting-policy train task=pusht_lowdim method=drifting network=unet_lowdim [experiment=pusht_cpu] [key=value ...]
    drifting-policy train run_dir=<existing run> [key=value ...]     # resume it, with its saved config
    torchrun --nproc_per_node=4 -m drifting_policy.cli train task=... method=... network=... run_dir=<dir>
    drifting-policy eval checkpoint=<run dir | pretrained dir | .ckpt> [n_test=50] [seed=0] [device=cuda]
                         [output_dir=...]
    drifting-policy report <run dirs or folders of runs ...> [--last 10] [--key test/mean_score]
    drifting-policy export|serve|control ...    # deployment: see `drifting-policy export --help`

``train`` overrides use hydra's syntax against configs/train.yaml (`drifting-policy train --help` lists them);
``eval`` takes dotted keys of the run's config (``task.env_runner.n_envs=8``) and, as a shorthand, env-runner
arguments without a dot (``n_test=50``). A mistake in a config, a data file or a run folder is reported as one
line and a hint; ``--debug`` (or HYDRA_FULL_ERROR=1) shows the traceback.
"""
from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from drifting.checkpoint import CheckpointError
from drifting_policy.errors import ConfigError, UserError

USAGE = __doc__
# Keys of a run that pick config files rather than values: given with run_dir, the run's config is composed anew.
COMPOSE_KEYS = {"task", "method", "network", "experiment"}


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


def override_text(value) -> str:
    """A config value as it is written in an override: null, true, [0.95,0.999]."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ",".join(map(override_text, value)) + "]"
    return str(value)


def train_help() -> str:
    """The train options: the config groups' choices and every key of train.yaml's sections with its default."""
    from drifting_policy.config import CONFIG_DIR, SECTION_SCHEMAS

    def choices(group: str) -> str:
        return ", ".join(sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml")))

    defaults = OmegaConf.load(Path(CONFIG_DIR) / "train.yaml")
    lines = ["usage: drifting-policy train task=<task> method=<method> network=<network> [experiment=<name>] "
             "[run_dir=<folder>] [key=value ...]", "",
             f"  task=        {choices('task')}", f"  method=      {choices('method')}",
             f"  network=     {choices('network')}",
             f"  experiment=  {choices('experiment')} (optional: a CPU budget on top)",
             "  run_dir=     the run folder (default outputs/<date>/<time>_<method>_<network>_<task>); a folder "
             "holding this run "
             "resumes it,", "               `train run_dir=<folder>` alone resumes it with its saved config",
             "  overwrite=   true deletes the run in run_dir and starts afresh (default false)", "",
             "options of configs/train.yaml (section.key=value; defaults shown):"]
    for section in SECTION_SCHEMAS:
        values = OmegaConf.to_container(defaults[section], resolve=False)
        items = " ".join(f"{key}={override_text(value)}" for key, value in values.items())
        lines += textwrap.wrap(items, width=116, initial_indent=f"  {section}: ", subsequent_indent="      ")
    lines += ["", "task.* keys come from the task file (configs/task); policy.config.* keys are the fields of the",
              "method's config dataclass (drifting_policy/policies/config.py) with the network file's settings on top;",
              "a new key is added with +key=value. --debug shows the traceback of an error."]
    return "\n".join(lines)


def saved_run_config(saved: Path, overrides: list[str]):
    """A run's saved config with ``key=value`` overrides on top (``+key=value`` as well: the check that follows
    refuses keys the schema does not know)."""
    from drifting_policy.config import load_config

    deletions = [item for item in overrides if item.startswith("~")]
    if deletions:
        raise ConfigError(f"{deletions[0]}: deleting keys of a saved run's config is not supported; set a value")
    try:
        return OmegaConf.merge(load_config(saved), OmegaConf.from_dotlist([item.lstrip("+") for item in overrides]))
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot apply the overrides to {saved}: {str(error).splitlines()[0]}") from None


def policy_name(choices: dict) -> str:
    """'<method>_<network>' (drifting_unet_lowdim): what reports and run folders call the policy."""
    return "_".join(choices[group] for group in ("method", "network") if group in choices) or "policy"


def train(overrides: list[str]) -> None:
    if {"-h", "--help"} & set(overrides):
        print(train_help())
        return
    from drifting_policy.config import check_train_config, compose_train_config
    from drifting_policy.workspace import TrainWorkspace

    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{item!r}: expected key=value (see `drifting-policy train --help`)")
    keys = {item.split("=", 1)[0].lstrip("+~") for item in overrides}
    if "policy" in keys:
        old = next(item for item in overrides if item.lstrip("+~").startswith("policy="))
        raise ConfigError(f"{old}: a policy is chosen as a method and a network now, e.g. method=drifting "
                          "network=unet_lowdim (configs/method, configs/network)")
    run_dir = next((item.split("=", 1)[1] for item in overrides if item.startswith("run_dir=")), None)
    saved = Path(run_dir) / ".hydra" / "config.yaml" if run_dir else None
    if saved is not None and saved.exists() and not keys & COMPOSE_KEYS:
        # Resuming a run as it was configured; overrides (e.g. training.num_epochs=...) apply on top.
        cfg = saved_run_config(saved, [item for item in overrides if not item.startswith("run_dir=")])
        choices = {}
    else:
        cfg, choices = compose_train_config(overrides)
    # The run folder is the one named here, never the one a saved config recorded (the run may have moved).
    cfg.run_dir = run_dir
    check_train_config(cfg)
    claimed = None
    if run_dir is None:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ConfigError("with several processes, name the run directory: run_dir=<dir> (every rank must agree)")
        stamp = time.strftime("%Y.%m.%d/%H.%M.%S")
        task = choices.get("task", cfg.task.name)
        claimed = cfg.run_dir = claim_new_dir(f"outputs/{stamp}_{policy_name(choices)}_{task}")
    run_info = {"task": choices["task"], "policy": policy_name(choices)} if "task" in choices else {}
    try:
        TrainWorkspace(cfg, cfg.run_dir, run_info=run_info).run()
    except BaseException:
        if claimed is not None and not any(Path(claimed).iterdir()):
            os.rmdir(claimed)  # the dated folder of a run that never started
        raise


# Errors shown as their message alone: the user's to fix (config, data, run folder, a damaged file) or an outcome
# the message explains in full (non-finite values).
REPORTED_ERRORS = (UserError, CheckpointError, FileNotFoundError, FloatingPointError)


def report_error(command: str, error: BaseException) -> None:
    hint = getattr(error, "hint", "") or "--debug shows the traceback"
    print(f"drifting-policy {command}: error: {error}", file=sys.stderr)
    print(f"hint: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    try:
        run_command(command, rest)
    except REPORTED_ERRORS as error:
        if debug:
            raise
        report_error(command, error)
        raise SystemExit(2) from None


def run_command(command: str, rest: list[str]) -> None:
    if command == "train":
        train(rest)
    elif command == "eval":
        from drifting_policy.evaluate import evaluate

        evaluate(rest)
    elif command == "report":
        from drifting_policy.report import main as report

        report(rest)
    elif command in ("export", "serve", "control"):
        from drifting_policy.deploy.cli import main as deploy

        deploy(command, rest)
    else:
        raise SystemExit(f"unknown command {command!r}; expected train, eval, report, export, serve or control\n"
                         f"{USAGE}")


if __name__ == "__main__":
    main()
