"""The one exception type for mistakes a user can make (bad data, config, options).

The command runner (:func:`runtime.cli.run`) turns it into a single line on stderr and
exit code 2; everything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
#: what an interrupted job that saved its state says (KeyboardInterrupt's message)
RESUME_HINT = "continue with --resume"


class UserError(Exception):
    """A problem the user can fix; the message names the file, field or option."""
