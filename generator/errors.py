"""The one exception type for mistakes a user can fix.

The CLI prints its message as a single line and exits with code 2; every
message names the file or option at fault and says what to do about it.
"""

_PREFIX = "UserError: "


class UserError(Exception):
    """Bad input from the user: a malformed file, a missing annotation, an unknown option.

    A UserError raised in a DataLoader worker reaches the main process re-created from the worker's formatted
    traceback ("Caught UserError in DataLoader worker process 0. Original Traceback ..."); the constructor keeps
    only the original message, so that the CLI still prints one line.
    """

    def __init__(self, message: str = ""):
        if isinstance(message, str) and message.startswith("Caught UserError") and "Original Traceback" in message:
            last = [ln for ln in message.splitlines() if _PREFIX in ln]
            if last:
                message = last[-1].split(_PREFIX, 1)[1]
        super().__init__(message)
