"""One owner per run: RUN_DIR/.lock, held (flock) by the process that trains the run and naming it.

The kernel drops a flock when its process dies, however it dies, so a lock file left by a killed run is free: the
next owner takes it over with a note. The file is removed when its owner releases it, on exit or when collected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path

from ddpmlab.errors import DdpmlabNote, UserError
from ddpmlab.paths import storage_errors_as_user_errors

LOCK_FILE = ".lock"


class RunLock:
    """The lock of `run_dir` (created if absent), held by this process until `release()`; UserError naming the owner
    (pid, host, since when) when another process holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        with storage_errors_as_user_errors(f"the lock file of {run_dir}", f"make {run_dir} writable"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, previous = _lock(self.path)
            owner = {"pid": os.getpid(), "host": socket.gethostname(),
                     "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner).encode(), 0)
        if previous.get("pid") not in (None, os.getpid()):
            warnings.warn(f"took over {self.path} from process {previous['pid']} on {previous.get('host', '?')}, "
                          f"which is no longer running (an interrupted run)", DdpmlabNote, stacklevel=2)
        self._release = weakref.finalize(self, _unlock, fd, str(self.path))

    def release(self) -> None:
        """Remove the lock file and let go of the lock (again: nothing)."""
        self._release()

    @property
    def held(self) -> bool:
        return self._release.alive


def _lock(path: Path) -> tuple[int, dict]:
    """(descriptor holding the flock of `path`, the owner its file named before: {} if none)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _owner(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            held_by = (f"process {owner['pid']} on {owner.get('host', '?')} (since {owner.get('since', '?')})"
                       if "pid" in owner else "another process")
            here = " (this one)" if owner.get("pid") == os.getpid() else ""
            raise UserError(f"{path.parent} is in use by {held_by}{here}: one process trains a run at a time; wait for "
                            f"it or stop it, or choose another --run-dir") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd, _owner(fd)
        os.close(fd)  # its owner released and removed it between our open and flock: take the new one


def _owner(fd: int) -> dict:
    """The owner a lock file names ({} if empty or unreadable)."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _unlock(fd: int, path: str) -> None:
    try:
        os.unlink(path)  # while still holding it, so that nobody takes a lock on a file about to vanish
    except OSError:
        pass
    os.close(fd)
