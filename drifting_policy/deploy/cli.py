"""``drifting-policy export | serve | control``: a trained policy onto a robot controller.

    drifting-policy export checkpoint=pretrained/pusht_lowdim_drifting format=onnx out=pusht.onnx
    drifting-policy serve checkpoint=pretrained/pusht_lowdim_drifting port=8000 [api_key=...] [backend=onnx]
    drifting-policy control server=ws://127.0.0.1:8000 task=pusht_lowdim rate_hz=10 episodes=10 mode=replace
    drifting-policy control server=ws://127.0.0.1:8000 delay_steps=4 mode=prefix   # a simulated 4-step delay
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from drifting.files import atomic_write_text
from drifting_policy.deploy.runtime import MODES
from drifting_policy.errors import UserError


@dataclass
class Option:
    kind: type
    default: object
    help: str
    choices: tuple = ()


COMMON = {"checkpoint": Option(str, None, "run folder, pretrained folder (config.json + model.safetensors) or .ckpt"),
          "which": Option(str, "last", "for a run folder: its pretrained/<which> export", ("last", "best"))}
OPTIONS = {
    "export": {
        **COMMON,
        "format": Option(str, "onnx", "onnx (onnxruntime, TensorRT, ...) or pt2 (torch.export's ExportedProgram)",
                         ("onnx", "pt2")),
        "out": Option(str, None, "file to write (default: <checkpoint name>.<format> in the current folder)"),
        "tolerance": Option(float, 1e-4, "largest allowed difference to torch, in normalised action units"),
    },
    "serve": {
        **COMMON,
        "checkpoint": Option(str, None, "as for export, or an exported .onnx file"),
        "host": Option(str, "127.0.0.1", "address to bind; anything but loopback should have an api_key"),
        "port": Option(int, 8000, "TCP port (0: any free port)"),
        "api_key": Option(str, None, "require 'Authorization: Api-Key <key>' from clients"),
        "backend": Option(str, "torch", "torch, or onnx (onnxruntime; a torch checkpoint is exported first)",
                          ("torch", "onnx")),
        "device": Option(str, "cpu", "torch backend's device"),
        "seed": Option(int, None, "seed of the server's noise (for reproducible chunks send the noise instead)"),
        "threads": Option(int, None, "intra-op threads of torch / onnxruntime (default: theirs; 1 leaves the "
                                     "other cores to the event loop and the controller)"),
        "max_message_mb": Option(float, 16.0, "largest request answered; 4x this closes the connection"),
    },
    "control": {
        "server": Option(str, "ws://127.0.0.1:8000", "policy server address"),
        "api_key": Option(str, None, "the server's API key"),
        "task": Option(str, None, "task config whose simulator to drive (default: the policy's task)"),
        "rate_hz": Option(float, None, "control rate (default: the policy's)"),
        "episodes": Option(int, 10, "test episodes, seeds seed, seed + 1, ..."),
        "seed": Option(int, 100000, "first test seed (DP's test seeds start at 100000)"),
        "mode": Option(str, "replace", "chunk hand-over", MODES),
        "candidates": Option(int, 16, "best_of_n mode: chunks drawn per request"),
        "horizon": Option(int, None, "actions executed per chunk before the next request (default: the policy's Ta)"),
        "delay_steps": Option(int, None, "simulate an inference delay of this many control steps instead of "
                                         "running in real time (deterministic)"),
        "max_steps": Option(int, None, "stop each episode after this many steps"),
        "videos": Option(int, 2, "record the first N episodes"),
        "output_dir": Option(str, "outputs/control", "where the summary and videos go"),
    },
}


def usage(command: str) -> str:
    lines = [f"drifting-policy {command} key=value ...", ""]
    for key, option in OPTIONS[command].items():
        choices = f" (one of {', '.join(option.choices)})" if option.choices else ""
        lines.append(f"  {key}={option.default if option.default is not None else '...'}  {option.help}{choices}")
    return "\n".join([__doc__.strip(), "", *lines])


def parse_options(command: str, args: list[str]) -> dict:
    """key=value arguments into typed options; any mistake is one line naming the key and what is allowed."""
    schema, options = OPTIONS[command], {key: option.default for key, option in OPTIONS[command].items()}
    for item in args:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"drifting-policy {command}: expected key=value, got {item!r} (see --help)")
        if key not in schema:
            raise SystemExit(f"drifting-policy {command}: unknown option {key!r}; options: {', '.join(schema)}")
        option = schema[key]
        try:
            value = text.lower() in ("1", "true", "yes") if option.kind is bool else option.kind(text)
        except ValueError:
            raise SystemExit(f"drifting-policy {command}: {key}={text!r} is not a {option.kind.__name__}") from None
        if option.choices and value not in option.choices:
            raise SystemExit(f"drifting-policy {command}: {key}={text!r}; allowed: {', '.join(option.choices)}")
        options[key] = value
    return options


def export(options: dict) -> None:
    from drifting_policy.deploy.export import check_parity, export_policy, policy_spec
    from drifting_policy.deploy.load import load_torch_policy

    if options["checkpoint"] is None:
        raise SystemExit("drifting-policy export: checkpoint=<run dir | pretrained dir | .ckpt> is required")
    policy, cfg, name = load_torch_policy(options["checkpoint"], options["which"])
    spec = policy_spec(policy, cfg, name)
    out = Path(options["out"] or f"{name}.{options['format']}")
    export_policy(policy, spec, out, options["format"])
    data_units, normalized = check_parity(policy, spec, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): observations "
          f"{ {k: (spec.n_obs_steps, *v['shape']) for k, v in spec.observation.items()} }, noise "
          f"{ {k: tuple(v) for k, v in spec.noise.items()} }"
          + (f", prefix ({spec.max_prefix_steps}, {spec.action_dim}) + mask" if spec.max_prefix_steps else "")
          + f" -> action ({spec.chunk_steps}, {spec.action_dim}) (the first {spec.n_action_steps} executed by "
          f"default) at {spec.control_rate_hz:g} Hz, batch axis dynamic")
    print(f"parity with torch (batches of 1 and 3, random observations and noise): max abs difference "
          f"{data_units:.3g} in data units, {normalized:.3g} in normalised units (tolerance {options['tolerance']:g})")
    if not normalized <= options["tolerance"]:
        out.unlink()
        raise SystemExit(f"export parity {normalized:.3g} is above the tolerance {options['tolerance']:g}; "
                         f"{out} was removed")


def serve(options: dict) -> None:
    from drifting_policy.deploy.load import load_backend
    from drifting_policy.deploy.server import PolicyServer

    if options["checkpoint"] is None:
        raise SystemExit("drifting-policy serve: checkpoint=<run dir | pretrained dir | .ckpt | .onnx> is required")
    backend, spec = load_backend(options["checkpoint"], options["backend"], options["device"], options["seed"],
                                 options["which"], options["threads"])
    PolicyServer(backend, spec, options["host"], options["port"], options["api_key"],
                 int(options["max_message_mb"] * 2**20)).run()


def control(options: dict) -> None:
    from tqdm import tqdm

    from drifting_policy.deploy.client import PolicyClient
    from drifting_policy.deploy.runtime import ControlLoop, summarize
    from drifting_policy.deploy.tasks import task_env
    from envs.common.video import VideoRecorder

    client = PolicyClient(options["server"], options["api_key"])
    spec = client.spec
    env_fn, seeds = task_env(options["task"] or spec.task, spec, options["episodes"], options["seed"])
    try:
        loop = ControlLoop(client, options["rate_hz"], options["mode"], options["horizon"],
                           delay_steps=options["delay_steps"], candidates=options["candidates"])
    except ValueError as error:
        client.close()
        raise SystemExit(f"drifting-policy control: {error}") from None
    output_dir = Path(options["output_dir"])
    results = []
    env = VideoRecorder(env_fn(), fps=round(loop.rate_hz))
    try:
        for i, seed in enumerate(tqdm(seeds, desc=f"control at {loop.rate_hz:g} Hz")):
            env.video_path = str(output_dir / "media" / f"test_{seed}.mp4") if i < options["videos"] else None
            results.append(loop.run_episode(env, seed, options["max_steps"]))
            env.flush()  # an episode cut short by max_steps still gets its video
    finally:
        env.close()
        loop.close()
        client.close()
    summary = {"server": options["server"], "mode": options["mode"], "rate_hz": loop.rate_hz,
               "horizon": loop.horizon, "delay_steps": options["delay_steps"],
               **summarize(results), "scores": {r.seed: r.score for r in results}}
    atomic_write_text(output_dir / "control_log.json", json.dumps(summary, indent=2) + "\n")
    print(f"score {summary['mean_score']:.3f} over {summary['episodes']} episodes ({spec.task}, "
          f"mode={options['mode']}, {summary['chunks']} chunks); rate {summary['achieved_rate_hz']:.2f} Hz "
          f"(asked {loop.rate_hz:g}); "
          f"deadline misses {summary['deadline_misses']}, underruns {summary['underruns']}, dropped actions "
          f"{summary['dropped_actions']}; round trip p50 {summary['round_trip_ms_p50']:.1f} ms, p90 "
          f"{summary['round_trip_ms_p90']:.1f} ms, p99 {summary['round_trip_ms_p99']:.1f} ms")
    print(f"motion: mean squared jerk {summary['mean_squared_jerk']:.4g}, hand-over jump max "
          f"{summary['max_handover_jump']:.4g} / mean {summary['mean_handover_jump']:.4g} (mean step "
          f"{summary['mean_step']:.4g}); idle steps {summary['idle_steps']}")
    print(f"wrote {output_dir / 'control_log.json'}" + (f" and videos in {output_dir / 'media'}"
                                                        if options["videos"] else ""))


class DeployError(UserError):
    hint = "`drifting-policy serve|control --help` lists the options"


def main(command: str, args: list[str]) -> None:
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(usage(command))
        return
    options = parse_options(command, args)
    try:
        {"export": export, "serve": serve, "control": control}[command](options)
    except PermissionError as error:
        raise DeployError(str(error), "give the server's key: api_key=<key>") from error
    except (ConnectionError, TimeoutError) as error:
        raise DeployError(str(error), "start it first: drifting-policy serve checkpoint=<policy> port=<port>") \
            from error
    except FileNotFoundError:
        raise  # the command line reports it as it is
    except OSError as error:  # e.g. the port is taken
        raise DeployError(f"{type(error).__name__}: {error}", "pick another port=<port>") from error


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
