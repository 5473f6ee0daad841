"""The exceptions unetbench raises for user mistakes."""

from __future__ import annotations

__all__ = ["ConfigError", "SizeError", "UnetbenchError", "UsageError"]


class UnetbenchError(Exception):
    """Base class of every error unetbench raises on purpose.

    ``exit_code`` is the status the command line exits with (2: a usage mistake).
    """

    exit_code = 2


class ConfigError(UnetbenchError, ValueError):
    """A U-Net configuration, input shape or study spec is not valid.

    The message names the field, the value that was given and what is allowed.
    """


class UsageError(UnetbenchError, ValueError):
    """A command-line or API argument outside what is allowed (device, file type, ...)."""


class SizeError(ConfigError, UsageError):
    """A memory size that cannot be read: a config mistake in a study spec and a usage mistake
    on the command line, so it is both."""
