"""The one error hierarchy of dedup.

Library code raises these (wrapping third-party exceptions with ``raise ... from e``); the CLI
(``dedup.cli.common.errors``) turns them into a one-line ``Error: ...`` and exit code 1. Anything else that
escapes is a bug and keeps its traceback.

::

    DedupError                      every error dedup reports to its user
    ├── ConfigError                 a configuration key or value is unknown or invalid
    ├── InputError                  a path, file or option given by the user is unusable
    │   └── ReportError             a report is not a valid dedup report of schema version 1
    ├── WeightsError                model weights could not be obtained or loaded
    │   └── WeightsUnavailableError the ImageNet weights are neither cached nor downloadable
    ├── ImageError                  one image could not be read (becomes a "skipped" entry, never a crash)
    ├── ActionError                 a file operation could not be planned, performed or undone
    ├── CacheError                  the feature cache cannot be used
    └── EngineError                 the Ray engine cannot be used (not installed, no cluster, cluster lost)

    OSError
    └── NotRegularFileError         a scanned path is not a regular file once opened (a FIFO, a device, ...
                                    swapped in after discovery); callers treat it like any unreadable file
"""

from __future__ import annotations

import errno
from typing import Any


class DedupError(Exception):
    """Base class of every error dedup reports to its user."""


class ConfigError(DedupError):
    """A configuration key or value is unknown or invalid."""


class InputError(DedupError):
    """A path given by the user is missing, unreadable or of the wrong kind."""


class ReportError(InputError):
    """A report file or dict is not a valid dedup report of schema version 1."""


class WeightsError(DedupError):
    """Model weights could not be obtained or loaded."""


class WeightsUnavailableError(WeightsError):
    """The ImageNet weights could neither be found in the Keras cache nor downloaded.

    Attributes:
        app: the backbone whose weights are missing (a ``dedup.features.keras.KerasApp``), for the how-to
            message.
    """

    def __init__(self, message: str, app: Any) -> None:
        super().__init__(message)
        self.app = app


class ImageError(DedupError):
    """One image could not be read or decoded; becomes a ``skipped`` entry, never a crash."""


class ActionError(DedupError):
    """A file operation (move, copy, link, delete, undo) could not be planned or performed."""


class CacheError(DedupError):
    """The feature cache cannot be used (e.g. its folder cannot be created)."""


class NotRegularFileError(OSError):
    """A path opened as a scanned file is not a regular file (checked on the open file descriptor).

    An :class:`OSError` (``errno`` ``EINVAL``), so every caller that copes with an unreadable file copes with
    this one: a FIFO or a link to ``/dev/zero`` swapped in after discovery is skipped, never read forever.
    """

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", path)
        self.kind = kind


class EngineError(DedupError):
    """The Ray engine cannot be used: ray is not installed, no cluster answers at the address, or the
    cluster lost work it could not redo."""
