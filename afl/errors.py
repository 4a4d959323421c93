"""User-facing errors: one line that names the key or file and the fix.

The CLI prints ``afl: error: <message>`` and exits with status 2 for any of these.
"""


class AflError(Exception):
    """A problem with the user's input that they can fix; the message is one line."""


class ConfigError(AflError):
    """An invalid configuration key, type, value or combination."""


class DataError(AflError):
    """A dataset that is missing, truncated, corrupt or could not be downloaded."""
