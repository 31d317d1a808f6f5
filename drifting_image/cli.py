"""The ``drifting-image`` command: the image branch's commands under one name.

Each command is the ``main`` of a module of this package, given the arguments after the command's name;
``python -m drifting_image.<module>`` runs the same ``main``. Modules are imported only when their command runs.
"""
from __future__ import annotations

import importlib
import sys

# command: (module of drifting_image, what it does)
COMMANDS = {
    "train": ("train", "train a generator with the drifting loss"),
    "train-mae": ("train_mae", "train the feature encoder (MAE) whose features the drifting loss uses"),
    "sample": ("sample", "sample a checkpoint or a released generator to PNG grids and an ADM .npz"),
    "fid": ("fid", "FID of samples against reference statistics, images or the MNIST digits"),
    "cfg-sweep": ("cfg_sweep", "FID over a range of CFG scales"),
    "encode-latents": ("encode_latents", "cache an ImageNet-layout folder as SD-VAE latents"),
    "demo-mnist": ("demo_mnist", "the MNIST demo on the CPU: MAE, generator, samples, FID, CFG table"),
    "official": ("official", "the authors' released models as our checkpoints and back"),
    "generator": ("generator", "the generator sizes and their parameter counts"),
}
WIDTH = max(map(len, COMMANDS))
USAGE = "\n".join(["usage: drifting-image <command> [arguments]", "", "commands:",
                   *(f"  {name:<{WIDTH}}  {what}" for name, (_, what) in COMMANDS.items()), "",
                   "`drifting-image <command> --help` lists the arguments of a command."])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"unknown command {command!r}\n{USAGE}")
    importlib.import_module(f"drifting_image.{COMMANDS[command][0]}").main(rest)


if __name__ == "__main__":
    main()
