"""The one error hierarchy of dedup.

Library code raises these (wrapping third-party exceptions with ``raise ... from e``);
``cli.py`` turns them into a one-line ``Error: ...`` and a non-zero exit code.
"""

from __future__ import annotations


class DedupError(Exception):
    """Base class of every error dedup reports to its user."""


class ConfigError(DedupError):
    """A configuration key or value is unknown or invalid."""


class InputError(DedupError):
    """A path given by the user is missing, unreadable or of the wrong kind."""


class WeightsError(DedupError):
    """Model weights could not be obtained or loaded."""


class ImageError(DedupError):
    """One image could not be read or decoded; becomes a ``skipped`` entry, never a crash."""


class ActionError(DedupError):
    """A file operation (move, copy, link, delete, undo) could not be planned or performed."""
