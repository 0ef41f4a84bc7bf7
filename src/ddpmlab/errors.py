"""The one exception type for user mistakes, printed by the CLI as `error: ...` (exit 2), and the one warning type
for what a user should know but need not fix, printed by the CLI as `warning: ...` (`note: ...` for a DdpmlabNote).

Library code never prints these itself: it raises or warns, and the CLI decides how they are shown."""


class UserError(Exception):
    """A mistake the user can fix: a missing file, a bad config value, a corrupt checkpoint.

    The message names the thing and the fix. Bugs stay ordinary exceptions.
    """


class Interrupted(Exception):
    """The user stopped the work with a signal (Ctrl-C: SIGINT, or SIGTERM) and what was done is saved; the CLI
    prints the message and exits 128 + the signal's number, the shell's convention, as `ddpmlab train` does."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class DdpmlabWarning(UserWarning):
    """Something the user should know that does not stop the work, e.g. images skipped as unreadable (issued with
    `warnings.warn`, so the same message from the same place is shown once per process)."""


class DdpmlabNote(DdpmlabWarning):
    """Information about something ddpmlab did on its own that needs no action, e.g. a stale lock taken over or a
    damaged cache recomputed; printed by the CLI as `note: ...`."""
