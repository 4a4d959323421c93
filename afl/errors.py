"""User-facing errors: one line that names the key or file and the fix.

The CLI prints ``afl: error: <message>`` and exits with status 2 for any of these.
"""

from typing import NoReturn


class AflError(Exception):
    """A problem with the user's input that they can fix; the message is one line."""


class ConfigError(AflError):
    """An invalid configuration key, type, value or combination."""


class DataError(AflError):
    """A dataset that is missing, truncated, corrupt or could not be downloaded."""


def config_fail(key: str, problem: str, fix: str) -> NoReturn:
    """Raise the house's config error: ``<key>: <problem>; fix: <fix>``."""
    raise ConfigError(f"{key}: {problem}; fix: {fix}")
