"""Errors that are the user's to fix (a config value, a data file, a run folder), not bugs.

``drifting-policy`` prints them as one line plus a hint, without a traceback (``--debug`` or ``HYDRA_FULL_ERROR=1``
shows it); everything else keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """One line saying what is wrong (naming the key, file or value) and a ``hint`` saying what to do."""

    hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(UserError, ValueError):
    hint = "`drifting-policy train --help` lists the options and what they take"


class DataError(UserError, ValueError):
    hint = "fix or regenerate the data file, or point the task at another one"


class RunFolderError(UserError):
    hint = "choose another folder with run_dir=<new folder>"
