"""Output paths checked before any compute, so that a long job never fails at its last line; files written whole or
not at all; a full disk or a refused write named as the user's to fix."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
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


def check_new_file(path: Path, flag: str, force: bool) -> None:
    """check_writable_file, and UserError when `path` exists unless `force`: no file is replaced unasked."""
    check_writable_file(path, flag)
    if Path(path).exists() and not force:
        raise UserError(f"{flag} {path} exists; use --force to replace it, or choose another name")


def temporary_sibling(path: Path) -> Path:
    """An unused name `.NAME.<random>.tmp` beside `path`, for writing it under before a rename into place."""
    while True:
        candidate = Path(path).with_name(f".{Path(path).name}.{secrets.token_hex(4)}.tmp")
        if not candidate.exists():
            return candidate


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a synced temporary file `.NAME.*.tmp` in the same folder and an atomic rename: a
    crash leaves the old file or the new one, never a part. The file gets the mode a new file gets (umask)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# errors of a write that the user fixes outside ddpmlab, with the words that name the fix
STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EFBIG: "the file is too large for the file system", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there"}


def storage_error(exc: OSError, what: str, fix: str, name_file: bool = True) -> UserError | None:
    """The UserError for a write of `what` that failed for lack of space or permission (None for another OSError):
    'cannot write WHAT (FILE): REASON; FIX', without (FILE) when not name_file or the error names none."""
    if exc.errno not in STORAGE_ERRORS:
        return None
    where = f" ({exc.filename})" if exc.filename and name_file else ""
    return UserError(f"cannot write {what}{where}: {STORAGE_ERRORS[exc.errno]} ({exc.strerror}); {fix}")


@contextlib.contextmanager
def storage_errors_as_user_errors(what: str, fix: str):
    """Inside, an OSError of a full disk, a quota, a read-only file system or a refused permission is re-raised as
    the UserError of `storage_error`; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, what, fix)
        if error is None:
            raise
        raise error from None


def safe_name(name: str) -> str:
    """`name` with every run of characters other than letters, digits, . _ - replaced by '-' (no folders, no
    leading dots); UserError when nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not cleaned:
        raise UserError(f"--name {name!r} has no letters or digits")
    return cleaned
