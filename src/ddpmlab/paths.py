"""Output paths checked before any compute, so that a long job never fails at its last line."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ddpmlab.errors import UserError


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_writable_folder(folder: Path, flag: str, target: Path | None = None) -> None:
    """UserError unless `folder` is, or can be created as, a folder this process can write files into;
    `target` (default `folder`) is the path the message names."""
    folder = Path(folder)
    target = Path(target) if target is not None else folder
    existing = _first_existing(folder)
    if not existing.is_dir():
        what = "is a file, not a folder" if existing == target else f"lies under {existing}, which is a file"
        raise UserError(f"{flag} {target} {what}")
    try:  # a real probe: permission bits say nothing for root, and /proc refuses new files whatever they say
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {target}: cannot write in {existing} ({exc.strerror or exc.__class__.__name__})") from None


def check_writable_file(path: Path, flag: str) -> None:
    """UserError unless a file can be written at `path` (not an existing folder, its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is an existing folder; give a file name")
    check_writable_folder(path.parent, flag, target=path)
