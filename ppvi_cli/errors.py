"""The two kinds of failure a ppvi command reports, and their exit codes.

Library code raises these; the CLI turns them into a one-line message and the exit code, so a
pipeline can tell bad input (2) from a protection that failed its gate (1). Any other exception is
a bug and exits with INTERNAL_ERROR (3), never with a gate's code.
"""

INTERNAL_ERROR = 3


class PPVIError(Exception):
    """Bad usage or bad input: a missing file, a wrong layout, an unknown name (exit code 2)."""

    exit_code = 2


class GateFailed(Exception):
    """A measured value crossed a user-set threshold, or some inputs failed (exit code 1)."""

    exit_code = 1
