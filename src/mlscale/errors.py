"""The project's error types.

`MlscaleError` is a user mistake or an environment problem that the user can fix: the CLI prints its
message as one line on stderr and exits with `exit_code` (2, a usage error, unless a subclass says
otherwise). Anything else that escapes is a bug and keeps its traceback.
"""


class MlscaleError(Exception):
    """A problem the user can fix: bad config, missing file, unknown name. Its message is one line
    (a library's multi-line message quoted in it is folded), so the CLI prints exactly one."""

    exit_code = 2

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


class RunFailed(MlscaleError):
    """A run that started correctly but could not finish (diverged loss, failed worker)."""

    exit_code = 1
