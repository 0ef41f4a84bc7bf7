"""Stopping a run on request: the first SIGINT/SIGTERM asks the loop to save and stop, a later one aborts."""

from __future__ import annotations

import contextlib
import signal
import time

SAME_STOP_S = 1.0  # Ctrl-C under torchrun reaches a worker twice (from the terminal, then from torchrun): one request


class StopFlag:
    requested = False
    signum: int | None = None
    at = 0.0


@contextlib.contextmanager
def stop_requested_on_signals():
    """While inside, the first SIGINT/SIGTERM sets `.requested` (the loop then saves and stops); a second one more
    than SAME_STOP_S later aborts."""
    flag = StopFlag()
    previous = {}

    def handler(signum, frame):
        if flag.requested:
            if time.monotonic() - flag.at > SAME_STOP_S:
                raise KeyboardInterrupt
            return
        flag.requested, flag.signum, flag.at = True, signum, time.monotonic()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
