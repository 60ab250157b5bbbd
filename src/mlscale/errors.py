"""The project's error types.

`MlscaleError` is a user mistake or an environment problem that the user can fix: the CLI prints its
message as one line on stderr and exits with `exit_code` (2, a usage error, unless a subclass says
otherwise). Anything else that escapes is a bug and keeps its traceback.
"""


class MlscaleError(Exception):
    """A problem the user can fix: bad config, missing file, unknown name."""

    exit_code = 2


class RunFailed(MlscaleError):
    """A run that started correctly but could not finish (diverged loss, failed worker)."""

    exit_code = 1
