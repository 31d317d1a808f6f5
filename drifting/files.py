"""Atomic writes, shared by both branches: every file or folder a run keeps is written under a temporary name
beside its target and renamed into place, so a crash or a kill never leaves a torn file where a reader looks.

The temporary name is ``.<stem>.tmp<PID><suffix>`` (the suffix kept: zarr, h5py and torch.export choose their
format by it); a folder that is replaced is first moved to ``.<name>.old<PID>``. A writer killed between the two
steps leaves such a name behind; the next write to the same target removes it once that process is gone.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

# What an atomic write leaves when its writer is killed: .<stem>.tmp<PID><suffix>, .<name>.old<PID>.
TEMP_NAME = re.compile(r"\..+\.(tmp|old)(\d+)(\.[^.]*)?")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f".{path.stem}.{kind}{os.getpid()}{path.suffix}" if kind == "tmp"
                          else f".{path.name}.{kind}{os.getpid()}")


def remove_path(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def remove_orphan_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files and folders of earlier writes to ``path`` whose writer (the PID in the name) is
    gone: nothing else would ever remove them."""
    path = Path(path)
    patterns = (re.compile(rf"\.{re.escape(path.stem)}\.tmp(\d+){re.escape(path.suffix)}"),
                re.compile(rf"\.{re.escape(path.name)}\.old(\d+)"))
    removed = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = next((m for m in (p.fullmatch(candidate.name) for p in patterns) if m), None)
            if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
                remove_path(candidate)
                removed.append(candidate)
    return removed


def _fsync(path: Path) -> None:
    """Flush a written file to the disk before it is renamed into place (a folder's files are left to the OS)."""
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; write a file or a folder there. On a clean exit it replaces
    ``path`` (an existing folder is swapped out, then deleted); on an error it is removed and ``path`` is left as
    it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temp_files(path)
    tmp = temp_path(path)
    remove_path(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} (the temporary name of {path})")
        _fsync(tmp)
        if path.is_dir() and not path.is_symlink():
            old = temp_path(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
