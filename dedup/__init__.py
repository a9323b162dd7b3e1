"""dedup: find near-duplicate images and curate image datasets.

Public API::

    from dedup import find_duplicates, load_config
    result = find_duplicates(["photos/"], load_config())
"""

from __future__ import annotations

__version__ = "0.1.0"

from dedup.config import Config, load_config  # noqa: E402
from dedup.errors import ConfigError, DedupError, InputError, WeightsError  # noqa: E402

__all__ = [
    "Config",
    "ConfigError",
    "DedupError",
    "InputError",
    "WeightsError",
    "__version__",
    "find_duplicates",
    "load_config",
]


def __getattr__(name: str):  # lazy: keeps `import dedup` and `dedup --help` fast
    if name == "find_duplicates":
        from dedup.pipeline import find_duplicates

        return find_duplicates
    raise AttributeError(name)
