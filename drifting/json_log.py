"""``logs.json.txt``: one JSON object per line, as Diffusion Policy writes it (its metric scripts read it); both
branches log this way.

Every line holds ``global_step`` (the 0-based index of the training step it follows) and whatever the trainer
logged at that step: the policy branch writes ``train_loss``, ``epoch``, ``lr`` and ``policy/<metric>`` every step,
and on the last step of an epoch the epoch's mean ``train_loss``, ``val_loss`` and the env runner's metrics
(``test/mean_score``, ...); the image trainers write their loss, gradient norm, learning rate and the drifting
loss's info every ``log_every`` steps.

A line that is not a JSON object (a torn last line of a killed run, a damaged byte) is skipped by the readers and
named by ``parse_json_log``; it never makes a reader or a resumed run drop the lines after it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drifting.files import atomic_write_bytes


def _plain(value):
    """JSON-safe scalars (numpy and torch scalars become floats, non-finite floats become null)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return value if math.isfinite(value) else None


def to_numbers(record: dict) -> dict:
    """``record`` with its tensors turned into Python numbers, all in one transfer (one device sync on a GPU,
    rather than one per metric)."""
    tensors = {key: value for key, value in record.items() if torch.is_tensor(value)}
    if not tensors:
        return record
    device = next(iter(tensors.values())).device
    values = torch.stack([value.detach().float().reshape(()).to(device) for value in tensors.values()]).tolist()
    return {**record, **dict(zip(tensors, values, strict=True))}


def numeric_items(record: dict) -> dict:
    """What goes to the logs: numbers and scalar tensors only (env runners also return video paths)."""
    return {key: value for key, value in record.items()
            if (isinstance(value, (int, float, np.number)) and not isinstance(value, bool))
            or (torch.is_tensor(value) and value.numel() == 1)}


@dataclass
class LogLine:
    number: int  # 1-based, as editors count
    raw: bytes  # as stored, with its newline if it has one
    record: dict | None  # None: not a JSON object

    @property
    def step(self) -> int | None:
        return None if self.record is None else self.record.get("global_step")


def _record(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def parse_json_log(path: str | Path) -> list[LogLine]:
    """Every line of a log, parsed where it can be."""
    with open(path, "rb") as f:  # binary lines end at b"\n" only, and keep a damaged byte as it is
        return [LogLine(number, raw, _record(raw)) for number, raw in enumerate(f, start=1)]


def bad_line_message(path: str | Path, line: LogLine) -> str:
    what = "an incomplete last line (a killed run?)" if not line.raw.endswith(b"\n") else "not a JSON object"
    return f"{path}:{line.number}: {what}; skipped: {line.raw.strip()[:60].decode(errors='replace')!r}"


def read_json_log(path: str | Path) -> list[dict]:
    """The records of every readable line; the others are skipped (``parse_json_log`` names them)."""
    return [line.record for line in parse_json_log(path) if line.record is not None]


class JsonLogger:
    """Appends lines to ``path``. ``resume_step`` drops the records from ``global_step >= resume_step`` (they
    belong to steps the resumed run takes again from its checkpoint) and the unreadable lines among them; an
    unreadable line before the last kept record stays where it is, so no earlier line is lost."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.kept_bad_lines: list[LogLine] = []
        if self.path.exists() and resume_step is not None:
            self._truncate(resume_step)
        self.file = open(self.path, "a")  # noqa: SIM115  (the logger holds it open until close())

    def _truncate(self, resume_step: int) -> None:
        lines = parse_json_log(self.path)
        kept_steps = [i for i, line in enumerate(lines) if line.step is not None and line.step < resume_step]
        end = kept_steps[-1] + 1 if kept_steps else 0
        kept = [line for line in lines[:end] if line.record is None or line.step is None or line.step < resume_step]
        self.kept_bad_lines = [line for line in kept if line.record is None]
        # A complete record may still lack its newline (a run killed between the two): the next one must not join it.
        atomic_write_bytes(self.path, b"".join(line.raw if line.raw.endswith(b"\n") else line.raw + b"\n"
                                               for line in kept))

    def log(self, record: dict) -> None:
        """One line; give numbers (``RunLog.log`` turns a record's tensors into numbers in one transfer first)."""
        self.file.write(json.dumps({key: _plain(value) for key, value in record.items()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
