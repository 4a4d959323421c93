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


# The most a file named by a config may hold. Past it the file is almost surely the wrong one (a
# dataset or a log named by mistake), and reading it would stall a login node for minutes.
MAX_CONFIG_BYTES = 16 * 2**20  # a YAML config, a routing JSON
MAX_TRACE_BYTES = 256 * 2**20  # a CSV trace: millions of rows


def check_size(path, key: str, limit: int, what: str) -> None:
    """One line, naming ``key``, if the file at ``path`` holds more than ``limit`` bytes. A file that
    cannot be stat'ed is left to its reader, which says why."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size > limit:
        config_fail(key, f"{path} holds {size / 2**20:,.0f} MiB, more than the {limit // 2**20} MiB a {what} may "
                         "(the wrong file?)", f"name the {what} there, or split or thin it below {limit // 2**20} MiB")
