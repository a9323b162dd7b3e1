"""dedup: find near-duplicate images and curate image datasets.

Public API (imported lazily, so ``import dedup`` and ``dedup --help`` stay fast)::

    from dedup import find_duplicates, load_config, prune
    result = find_duplicates(["photos/"], load_config())          # a ScanResult; nothing is touched
    outcome = prune(["photos/"], load_config(), to="quarantine")   # journaled; undo(outcome.applied.manifest)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from dedup.config import Config, load_config  # noqa: E402
from dedup.errors import ActionError, ConfigError, DedupError, ImageError, InputError, WeightsError  # noqa: E402

if TYPE_CHECKING:
    from dedup.actions import plan_group, plan_prune
    from dedup.actions.apply import apply
    from dedup.actions.undo import undo
    from dedup.curate import group, prune, scan
    from dedup.pipeline import ScanResult, cluster_collection, find_duplicates, find_similar
    from dedup.report import Report, from_result, load_report

# name -> module that defines it
_LAZY = {
    "find_duplicates": "dedup.pipeline",
    "find_similar": "dedup.pipeline",
    "cluster_collection": "dedup.pipeline",
    "ScanResult": "dedup.pipeline",
    "scan": "dedup.curate",
    "prune": "dedup.curate",
    "group": "dedup.curate",
    "plan_prune": "dedup.actions",
    "plan_group": "dedup.actions",
    "apply": "dedup.actions",
    "undo": "dedup.actions",
    "Report": "dedup.report",
    "from_result": "dedup.report",
    "load_report": "dedup.report",
}

__all__ = [
    "ActionError",
    "Config",
    "ConfigError",
    "DedupError",
    "ImageError",
    "InputError",
    "Report",
    "ScanResult",
    "WeightsError",
    "__version__",
    "apply",
    "cluster_collection",
    "find_duplicates",
    "find_similar",
    "from_result",
    "group",
    "load_config",
    "load_report",
    "plan_group",
    "plan_prune",
    "prune",
    "scan",
    "undo",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dedup' has no attribute {name!r}")
    return getattr(import_module(module), name)
