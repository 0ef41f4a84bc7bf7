"""The one exception type for user mistakes; the CLI prints it as `error: ...` and exits 2."""


class UserError(Exception):
    """A mistake the user can fix: a missing file, a bad config value, a corrupt checkpoint.

    The message names the thing and the fix. Bugs stay ordinary exceptions.
    """
