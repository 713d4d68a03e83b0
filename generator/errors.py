"""The one exception type for mistakes a user can fix.

The CLI prints its message as a single line and exits with code 2; every
message names the file or option at fault and says what to do about it.
"""


class UserError(Exception):
    """Bad input from the user: a malformed file, a missing annotation, an unknown option."""
