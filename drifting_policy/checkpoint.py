"""Checkpoint files of a training run, all written atomically (a temporary file, then a rename).

``<run>/checkpoints/latest.ckpt`` holds everything needed to resume exactly; the best ``k`` epochs by
``test/mean_score`` are kept beside it as ``epoch=0050-test_mean_score=0.912.ckpt`` (Diffusion Policy's names).
``<run>/pretrained/{best,last}/`` hold the EMA policy exported with ``save_pretrained``.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


TOPK_PATTERN = re.compile(r"epoch=(\d+)-test_mean_score=(-?\d+\.\d+)\.ckpt")


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def atomic_save_pretrained(policy, directory: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """``policy.save_pretrained`` (plus ``extra_files``: name -> text) into a fresh folder that then replaces
    ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = directory.with_name(f".{directory.name}.tmp"), directory.with_name(f".{directory.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    policy.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


class TopKCheckpoints:
    """Keeps the ``k`` highest-scoring checkpoints in ``directory``; its memory is the file names themselves, so
    a resumed run continues the same ranking."""

    def __init__(self, directory: str | Path, k: int = 5):
        self.directory, self.k = Path(directory), k

    def scores(self) -> dict[Path, float]:
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in self.directory.iterdir():
            match = TOPK_PATTERN.fullmatch(path.name)
            if match:
                found[path] = float(match.group(2))
        return found

    def path_for(self, epoch: int, score: float) -> Path:
        return self.directory / f"epoch={epoch:04d}-test_mean_score={score:.3f}.ckpt"

    def add(self, source: str | Path, epoch: int, score: float) -> Path | None:
        """Copy ``source`` in as this epoch's checkpoint if it ranks in the top k; drop the one it displaces."""
        if self.k <= 0:
            return None
        kept = self.scores()
        worst = min(kept, key=kept.get) if len(kept) >= self.k else None
        if worst is not None and score <= kept[worst]:
            return None
        path = atomic_copy(source, self.path_for(epoch, score))
        if worst is not None and worst != path:
            worst.unlink()
        return path

    def best(self) -> Path | None:
        kept = self.scores()
        return max(kept, key=kept.get) if kept else None
