"""Errors that the CLI turns into one clear message instead of a traceback."""
from __future__ import annotations


class SnnsecError(Exception):
    """Base class: a user-facing problem with a specific, actionable message."""


class UnknownNameError(SnnsecError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SnnsecError, ValueError):
    """A parameter is out of range or inconsistent with another one."""


class DataNotFoundError(SnnsecError, FileNotFoundError):
    """A dataset's files are missing; the message names the expected layout and where to get them."""


class DataError(SnnsecError, ValueError):
    """A dataset file is unreadable or holds invalid events; the message names the file and what is wrong."""
