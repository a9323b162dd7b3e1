"""Path rules of file actions: absolute normalised paths, what lies inside what, free names, the scanned root
of a file, output folders excluded from the scan, and destinations that must not contain a scanned root."""

from __future__ import annotations

import os
import re
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
    """The output folder of a plan: not a file, not a system folder, not (containing) a scanned root."""
    dest = absolute(to)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise ActionError(f"destination {dest} exists and is not a folder")
    why = system_folder(dest)
    if why:
        raise ActionError(f"destination {dest} is {why}; choose a folder of your own")
    real = os.path.realpath(dest)
    for root in roots:
        rreal = os.path.realpath(root)
        if within(root, dest) or within(rreal, real):
            raise ActionError(f"destination {dest} must not be, or contain, the scanned folder {root}")
    return dest


# Folders no prune, group or undo acts in, whatever a report or manifest says: the root of the filesystem and
# the operating system's own folders (themselves; a folder below /usr, /var, /home, /opt ... is fine, except
# below the kernel's and the configuration's trees, which never hold an image collection).
SYSTEM_FOLDERS = frozenset(
    {
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
        "/opt", "/proc", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
        "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/local", "/usr/sbin", "/usr/share", "/var/lib",
    }
)  # fmt: skip
SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/sys")
#: Folders below a system tree that are ordinary storage (a tmpfs anyone may use).
NOT_SYSTEM = ("/dev/shm",)


def system_folder(path: str) -> str | None:
    """Why ``path`` (absolute) may not be a folder that files are acted on in, or None when it may: the
    filesystem root, an operating-system folder itself (:data:`SYSTEM_FOLDERS`), or anything below
    :data:`SYSTEM_TREES` -- compared as given and with symbolic links resolved."""
    for p in dict.fromkeys([absolute(path), os.path.realpath(path)]):
        if p == os.path.dirname(p):
            return "the root of the filesystem"
        if p in SYSTEM_FOLDERS:
            return "a system folder"
        if any(within(p, tree) for tree in SYSTEM_TREES) and not any(
            within(p, ok) and p != ok for ok in NOT_SYSTEM
        ):
            return "inside a system folder"
    return None


def check_roots(roots: Sequence[str], what: str) -> list[str]:
    """The scanned roots of a plan, refused when one is a system folder (see :func:`system_folder`).

    Raises:
        ActionError: naming the root and ``what`` it comes from (e.g. "the report").
    """
    out = []
    for root in roots:
        r = absolute(root)
        why = system_folder(r)
        if why:
            raise ActionError(
                f"{what} names {r} as a scanned folder, which is {why}; dedup does not move, copy or delete "
                "files there"
            )
        out.append(r)
    return out


def check_writable(to: str | os.PathLike[str]) -> str:
    """An output folder that exists and is writable, or can be created (checked before a long scan).

    Raises:
        ActionError: it, or the nearest existing folder above it, is not a writable folder (permission
            denied, read-only filesystem).
    """
    dest = absolute(to)
    p = dest
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise ActionError(f"destination {dest}: {p} exists and is not a folder")
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if not os.access(p, os.W_OK | os.X_OK):
        how = "exists" if p == dest else f"would be created in {p}, which"
        raise ActionError(f"destination {dest} {how} is not writable (permission denied or read-only)")
    return dest


def same_name(name: str, original: str) -> bool:
    """``name`` is ``original`` or one of the ``" (n)"`` variants :func:`free_name` gives it."""
    if name == original:
        return True
    stem, ext = os.path.splitext(original)
    if stem == "" or (stem.startswith(".") and not ext):
        stem, ext = original, ""
    return re.fullmatch(re.escape(stem) + r" \(\d+\)" + re.escape(ext), name) is not None
