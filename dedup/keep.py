"""Which image of a duplicate group is kept: the keep policies (``keep.policy``), in one place.

The scanner (:mod:`dedup.cluster`), the planner of file actions (:mod:`dedup.actions.plan`, when a report's
choice is re-made with ``--keep``) and the configuration's list of allowed values all use this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dedup.errors import ConfigError

#: The keep policies, in the order the help text lists them.
KEEP_POLICIES = ("resolution", "filesize", "oldest", "newest", "path")


class HasImageFacts(Protocol):
    """What the keep policies need to know about an image (``ImageRecord`` and ``ReportMember`` have it)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


def check_policy(policy: str) -> str:
    """``policy`` unchanged if it is a keep policy.

    Raises:
        ConfigError: unknown policy (the message lists the allowed values).
    """
    if policy not in KEEP_POLICIES:
        raise ConfigError(
            f"keep.policy: {policy!r} is not allowed; allowed values: {', '.join(KEEP_POLICIES)}"
        )
    return policy


def _sort_key(policy: str, image: HasImageFacts) -> tuple[float, str]:
    """Smaller key = better candidate to keep; the path breaks ties deterministically."""
    if policy == "resolution":
        return (-float(image.width * image.height), image.path)
    if policy == "filesize":
        return (-float(image.size), image.path)
    if policy == "oldest":
        return (image.mtime, image.path)
    if policy == "newest":
        return (-image.mtime, image.path)
    return (0.0, image.path)  # "path"


def choose_keep(images: Sequence[HasImageFacts], policy: str) -> int:
    """Position in ``images`` of the image to keep under ``policy``.

    Policies: ``resolution`` (largest width x height), ``filesize`` (largest file), ``oldest`` / ``newest``
    (modification time), ``path`` (first in sorted order). Ties are broken by path, so the choice is
    deterministic whatever order the images come in.

    Raises:
        ConfigError: unknown policy.
        ValueError: no images.
    """
    check_policy(policy)
    if not images:
        raise ValueError("choose_keep needs at least one image")
    return min(range(len(images)), key=lambda i: _sort_key(policy, images[i]))
