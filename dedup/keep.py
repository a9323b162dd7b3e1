"""Which image of a duplicate group is kept: the keep policies (``keep.policy``) and reference folders
(``keep.reference``), in one place.

The scanner (:mod:`dedup.cluster`), the planner of file actions (:mod:`dedup.actions.plan`, when a report's
choice is re-made with ``--keep``), the review page and the configuration's list of allowed values all use
this module.

Policies (ties are always broken by path, so the choice does not depend on the order of the images):

- ``best`` (the default): most pixels; at equal pixels a colour image before a grayscale one; then the
  better encoding -- a lossless file before any JPEG, a JPEG of higher estimated quality before one of
  lower quality, and files whose quality is unknown (lossy WebP, palette images, a lossless file converted
  from a JPEG, a JPEG re-saved at a high quality from a more strongly compressed one) last; then the
  larger file; then the file that is not a derived copy (see :mod:`dedup.facts`).
- ``resolution``: largest width x height. ``filesize``: largest file. ``oldest`` / ``newest``: modification
  time. ``path``: first in sorted order.

Reference folders: an image under one of them is always kept -- the policy chooses among the group's
reference images when it has any -- and is never moved or deleted (the planner enforces that too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from dedup.errors import ConfigError

#: The keep policies, in the order the help text lists them (the first is the default).
KEEP_POLICIES = ("best", "resolution", "filesize", "oldest", "newest", "path")

#: Rank of an encoding for ``best``: a genuine lossless file beats every JPEG quality (1-100).
LOSSLESS_RANK = 101


class HasImageFacts(Protocol):
    """What the keep policies need to know about an image (``ImageRecord`` and ``ReportMember`` have it).

    ``best`` also reads ``quality``, ``lossless``, ``recompressed``, ``derived`` and ``grayscale`` when the
    object has them (:class:`dedup.facts.ImageFacts`); missing or None counts as unknown.
    """

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


def encoding_rank(image: object) -> int:
    """``best``'s encoding rank: :data:`LOSSLESS_RANK` for a lossless file, the estimated quality of a
    JPEG (1-100), 0 when unknown (also for a recompressed JPEG, whose nominal quality says nothing)."""
    if getattr(image, "lossless", None):
        return LOSSLESS_RANK
    if getattr(image, "recompressed", None):
        return 0
    quality = getattr(image, "quality", None)
    return int(quality) if isinstance(quality, int) and not isinstance(quality, bool) else 0


def _sort_key(policy: str, image: HasImageFacts) -> tuple[float | str, ...]:
    """Smaller key = better candidate to keep; the path breaks ties deterministically."""
    if policy == "best":
        return (
            -float(image.width * image.height),
            1.0 if getattr(image, "grayscale", None) else 0.0,
            -float(encoding_rank(image)),
            -float(image.size),
            1.0 if getattr(image, "derived", None) else 0.0,
            image.path,
        )
    if policy == "resolution":
        return (-float(image.width * image.height), image.path)
    if policy == "filesize":
        return (-float(image.size), image.path)
    if policy == "oldest":
        return (image.mtime, image.path)
    if policy == "newest":
        return (-image.mtime, image.path)
    return (0.0, image.path)  # "path"


def in_reference(path: str, reference: Sequence[str]) -> bool:
    """Whether ``path`` lies under one of the ``reference`` folders (absolute paths; compared both as
    written and with symbolic links resolved, so another spelling of the same folder counts)."""
    if not reference:
        return False
    spellings = {os.path.normpath(os.path.abspath(path)), os.path.realpath(path)}
    for folder in reference:
        roots = {os.path.normpath(os.path.abspath(folder)), os.path.realpath(folder)}
        for p in spellings:
            for root in roots:
                try:
                    if os.path.commonpath([p, root]) == root:
                        return True
                except ValueError:
                    continue
    return False


def choose_keep(images: Sequence[HasImageFacts], policy: str, reference: Sequence[str] = ()) -> int:
    """Position in ``images`` of the image to keep under ``policy``.

    With ``reference`` folders, only the images under them are candidates when the group has any.
    Ties are broken by path, so the choice is deterministic whatever order the images come in.

    Raises:
        ConfigError: unknown policy.
        ValueError: no images.
    """
    check_policy(policy)
    if not images:
        raise ValueError("choose_keep needs at least one image")
    candidates = [i for i in range(len(images)) if in_reference(images[i].path, reference)]
    return min(candidates or range(len(images)), key=lambda i: _sort_key(policy, images[i]))
