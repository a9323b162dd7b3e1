"""Path rules of file actions: absolute normalised paths, what lies inside what, free names, the scanned root
of a file, output folders excluded from the scan, and destinations that must not contain a scanned root."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dedup.errors import ActionError

PARTIAL_SUFFIX = ".dedup-partial"


def path_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ActionError(f"expected a path string, got {value!r}")
    return value


def absolute(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised; lexical)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The deepest scanned root containing ``path`` (a root that is a file maps to its folder)."""
    best: str | None = None
    for root in roots:
        base = root
        if os.path.isfile(root) or root == path:
            base = os.path.dirname(root)
        if within(path, base) and (best is None or len(base) > len(best)):
            best = base
    return best


def suffixed(path: str, n: int) -> str:
    head, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if stem == "" or (stem.startswith(".") and not ext):
        stem, ext = name, ""
    return os.path.join(head, f"{stem} ({n}){ext}")


def free_name(path: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``path`` or the first of ``name (1).ext``, ``name (2).ext``... that is neither on disk nor taken."""
    candidate, n = path, 0
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = suffixed(path, n)
    return candidate


def partial_name(path: str) -> str:
    """Temporary name of a copy in progress, next to its final name."""
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}{PARTIAL_SUFFIX}")


def output_exclusions(
    paths: Sequence[str | os.PathLike[str]], to: str | os.PathLike[str] | None
) -> list[Path]:
    """Folders the scan must skip so an output folder inside a scanned root is never scanned.

    Args:
        paths: the scanned roots.
        to: the quarantine / output folder (``None`` for ``prune --delete``).

    Returns:
        ``[to]`` (absolute; plus its resolved form when that differs) if ``to`` lies inside one of ``paths``,
        else ``[]``.
    """
    if to is None:
        return []
    dest, dest_real = absolute(to), os.path.realpath(to)
    inside = any(within(dest, absolute(p)) or within(dest_real, os.path.realpath(p)) for p in paths)
    if not inside:
        return []
    return [Path(p) for p in dict.fromkeys([dest, dest_real])]


ESCAPE_REASON = "reached through a symbolic link to a folder outside the scanned folders"


def escapes(path: str, roots: Sequence[str]) -> bool:
    """The folder holding ``path`` really lies outside every root (it was reached through a symlink)."""
    parent = os.path.realpath(os.path.dirname(path))
    return not any(
        within(parent, os.path.realpath(r if os.path.isdir(r) else os.path.dirname(r))) for r in roots
    )


def check_dest(to: str | os.PathLike[str], roots: Sequence[str]) -> str:
    dest = absolute(to)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise ActionError(f"destination {dest} exists and is not a folder")
    real = os.path.realpath(dest)
    for root in roots:
        rreal = os.path.realpath(root)
        if within(root, dest) or within(rreal, real):
            raise ActionError(f"destination {dest} must not be, or contain, the scanned folder {root}")
    return dest
