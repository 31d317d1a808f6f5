"""``drifting-image <command>``: each command runs its module's ``main`` with the remaining arguments."""
import importlib
import inspect

import pytest

from drifting_image import cli


def test_every_command_is_a_module_main_that_takes_the_arguments():
    for command, (module, _) in cli.COMMANDS.items():
        main = importlib.import_module(f"drifting_image.{module}").main
        assert list(inspect.signature(main).parameters) == ["argv"], command


def test_the_arguments_after_the_command_reach_its_main(capsys):
    cli.main(["generator"])
    assert "B/2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: drifting-image train")


def test_usage_and_unknown_commands(capsys):
    cli.main([])
    usage = capsys.readouterr().out
    assert all(f"  {command} " in usage for command in cli.COMMANDS)
    with pytest.raises(SystemExit, match="unknown command 'trian'"):
        cli.main(["trian"])
