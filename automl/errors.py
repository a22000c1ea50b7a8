"""The one exception type for mistakes a user can make (bad data, config, options).

The command line turns it into a single line on stderr and exit code 2; everything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the file, field or option."""
