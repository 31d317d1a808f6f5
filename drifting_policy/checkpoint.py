"""Checkpoint files of a training run, all written atomically (a temporary file, then a rename).

``<run>/checkpoints/latest.ckpt`` holds everything needed to resume exactly; the best ``k`` epochs by
``test/mean_score`` are kept beside it as ``epoch=0050-test_mean_score=0.912.ckpt`` (Diffusion Policy's names).
``<run>/pretrained/{best,last}/`` hold the EMA policy exported with ``save_pretrained``.

A scored epoch's top-k file is written before ``latest.ckpt`` (which is then copied from it): a run killed between
the two resumes from the previous ``latest.ckpt``, repeats the epoch and writes the same top-k file again, so no
epoch's top-k checkpoint is lost. ``pretrained/last`` follows ``latest.ckpt`` and is exported again by a resumed
run. Temporary files a killed run leaves behind are removed when it resumes.
"""
from __future__ import annotations

import re
from pathlib import Path

from drifting.checkpoint import atomic_save
from drifting.files import TEMP_NAME, atomic_path, remove_path

TOPK_PATTERN = re.compile(r"epoch=(\d+)-test_mean_score=(-?\d+\.\d+)\.ckpt")
RUN_SUBFOLDERS = ("", "checkpoints", "pretrained", ".hydra")


def atomic_save_pretrained(policy, directory: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """``policy.save_pretrained`` (plus ``extra_files``: name -> text) into a fresh folder that then replaces
    ``directory``."""
    with atomic_path(directory) as tmp:
        policy.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(directory)


def remove_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files and folders of atomic writes in a run folder. Only for the run's owner (the
    holder of its lock): a live writer's temporary file would go too."""
    removed = []
    for folder in (Path(run_dir) / name for name in RUN_SUBFOLDERS):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMP_NAME.fullmatch(path.name):
                remove_path(path)
                removed.append(path)
    return removed


class TopKCheckpoints:
    """Keeps the ``k`` highest-scoring checkpoints in ``directory`` (on equal scores the earlier epoch); its memory
    is the file names themselves, so a resumed run continues the same ranking."""

    def __init__(self, directory: str | Path, k: int = 5):
        self.directory, self.k = Path(directory), k

    def scores(self) -> dict[Path, float]:
        return {path: score for path, (_, score) in self._kept().items()}

    def _kept(self) -> dict[Path, tuple[int, float]]:
        """(epoch, score) of every top-k checkpoint in the folder, read from its name."""
        if not self.directory.is_dir():
            return {}
        kept = {}
        for path in self.directory.iterdir():
            match = TOPK_PATTERN.fullmatch(path.name)
            if match:
                kept[path] = (int(match.group(1)), float(match.group(2)))
        return kept

    def by_epoch(self) -> list[Path]:
        """The kept checkpoints, newest epoch first."""
        kept = self._kept()
        return sorted(kept, key=lambda path: kept[path][0], reverse=True)

    def path_for(self, epoch: int, score: float) -> Path:
        return self.directory / f"epoch={epoch:04d}-test_mean_score={score:.3f}.ckpt"

    def _ranked(self) -> list[Path]:
        """Best first; on equal scores the earlier epoch first."""
        kept = self._kept()
        return sorted(kept, key=lambda path: (-kept[path][1], kept[path][0]))

    def ranks(self, epoch: int, score: float) -> bool:
        """Whether this epoch's checkpoint belongs among the best k (a file of the same name, left by a run killed
        before it wrote latest.ckpt, does not count against it)."""
        if self.k <= 0:
            return False
        own = self.path_for(epoch, score)
        others = [path for path in self._ranked() if path != own]
        return len(others) < self.k or score > self.scores()[others[self.k - 1]]

    def save(self, state: dict, epoch: int, score: float) -> Path | None:
        """Write ``state`` as this epoch's checkpoint if it ranks among the best k; ``prune`` then drops the one it
        displaces."""
        return atomic_save(state, self.path_for(epoch, score)) if self.ranks(epoch, score) else None

    def prune(self) -> list[Path]:
        """Delete every checkpoint beyond the best k."""
        dropped = self._ranked()[max(self.k, 0):]
        for path in dropped:
            path.unlink(missing_ok=True)
        return dropped

    def best(self) -> Path | None:
        ranked = self._ranked()
        return ranked[0] if ranked else None
