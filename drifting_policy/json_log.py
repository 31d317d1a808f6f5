"""``logs.json.txt``: one JSON object per line, as Diffusion Policy writes it (its metric scripts read it).

A line per training step holds ``train_loss``, ``global_step``, ``epoch`` and ``lr``; the last step of an epoch
instead carries the epoch's mean ``train_loss`` and, when they ran, ``val_loss`` and the env runner's metrics
(``test/mean_score``, ...).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


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


def read_json_log(path: str | Path) -> list[dict]:
    """All complete lines of a log; a half-written last line (a killed run) is skipped."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class JsonLogger:
    """Appends lines to ``path``. ``resume_step`` drops lines from ``global_step >= resume_step`` (and any torn
    line): they belong to steps the resumed run will take again from its checkpoint."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if self.path.exists():
            kept = read_json_log(self.path)
            if resume_step is not None:
                kept = [r for r in kept if r.get("global_step", -1) < resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self.file = open(self.path, "a")

    def log(self, record: dict) -> None:
        self.file.write(json.dumps({key: _plain(value) for key, value in record.items()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
