"""``dedup review``: decide in the browser which images of each duplicate group to keep, mark false pairs
(remembered in the ignore list), and move the duplicates to a quarantine folder with the same journaled
prune as the CLI.

- :mod:`dedup.review.state`: the decisions and the reviewed report (schema v1), saved after every decision.
- :mod:`dedup.review.app`: the FastAPI app (the page, its data, the report's images, the decisions).
- :mod:`dedup.review.server`: uvicorn on a loopback port with a random token, in the foreground or a thread.

Example::

    from dedup.review import ReviewServer, ReviewState
    from dedup.ignore import IgnoreList
    from dedup import load_config

    state = ReviewState.open("scan.json", ignore=IgnoreList.from_config(load_config()))
    with ReviewServer(state, load_config(), quarantine="quarantine/") as server:
        print(server.url)   # open it; every decision is saved to state.output at once
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dedup.review.app import create_app
    from dedup.review.server import ReviewServer
    from dedup.review.state import ReviewState, default_output

_LAZY = {
    "ReviewState": "dedup.review.state",
    "default_output": "dedup.review.state",
    "create_app": "dedup.review.app",
    "ReviewServer": "dedup.review.server",
}

__all__ = ["ReviewServer", "ReviewState", "create_app", "default_output"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dedup.review' has no attribute {name!r}")
    return getattr(import_module(module), name)
