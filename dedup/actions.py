"""Act on duplicate groups without ever losing a file: plan (pure), apply (journaled), undo.

Three steps, each an explicit value:

1. :func:`plan_prune` / :func:`plan_group` turn a scan report dict (schema version 1, see ``report.py``)
   into a :class:`Plan`: a list of :class:`Operation` records (move, copy, link, delete) plus the items
   that will not be touched and why. Planning only ``stat()``s files; it never writes.
2. :func:`apply` performs a plan under a write-ahead journal (the *manifest*, JSON lines): an ``intent``
   record is appended and fsynced before each operation, a ``done`` record after it. A run killed at any
   point can be finished by applying the same plan to the same manifest (see :func:`find_resumable`) or
   reversed by :func:`undo`.
3. :func:`undo` restores every moved file to where it was, byte-identical, and removes the copies and links
   it made. It journals itself into the same manifest, so it too can be killed and re-run.

Manifest format (one JSON object per line; every line is flushed and fsynced before the work it announces):

- ``{"type": "header", "version": 1, "tool", "command": "prune"|"group", "mode": "move"|"delete"|"copy"|
  "link", "created", "scanned_roots": [...], "dest": str|null, "roots": [...scanned roots, dest],
  "irreversible": bool, "created_dirs": [...]}`` -- ``roots`` are the only folders the manifest may touch.
- ``{"type": "plan", "plan": Plan.to_dict()}`` and, when a resumed run found new work, ``{"type":
  "plan-extend", "operations": [...]}``.
- ``{"type": "mkdir", "path"}`` before creating a folder; ``{"type": "intent", "index", "op", "src",
  "dst"}`` before an operation; ``{"type": "done", "index", "dst", "sha256"?}`` after it;
  ``{"type": "failed", "index", "reason"}``; ``{"type": "resume", "created"}``; ``{"type": "end", ...}``.
- Undo appends ``undo-start``, ``undo-intent`` / ``undo-done`` / ``undo-failed`` (with ``index``) and
  ``undo-end``.

``prune --delete`` has no output folder: its manifest goes to :func:`default_state_dir` and is marked
``"irreversible": true``; deleted files cannot be restored by :func:`undo`, which says so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from dedup import __version__
from dedup.errors import ActionError, ConfigError

ProgressFn = Callable[[str, int, "int | None"], None]
M = TypeVar("M", bound=Mapping[str, Any])

MANIFEST_VERSION = 1
KEEP_POLICIES = ("resolution", "filesize", "oldest", "newest", "path")
GROUP_MODES = ("copy", "move", "link")
#: Modification times are compared with this tolerance in seconds (JSON round trips, coarse filesystems).
MTIME_TOLERANCE = 1e-3
PARTIAL_SUFFIX = ".dedup-partial"
#: Tests only: "PHASE:N" makes the process SIGKILL itself at the N-th PHASE (intent, copied, done,
#: undo-intent, undo-done).
KILL_ENV = "DEDUP_TEST_KILL_AFTER"
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------ value types


@dataclass(frozen=True)
class Operation:
    """One planned file operation.

    Attributes:
        op: ``move`` | ``copy`` | ``link`` (symbolic link to ``src``) | ``delete``.
        src: absolute path of the file acted on (as scanned; a symbolic link is acted on itself).
        dst: absolute destination path, ``None`` for ``delete``. Apply may add a ``" (n)"`` suffix when the
            destination was taken in the meantime; the manifest records the path really used.
        bytes: size of the file in bytes (of the link's target for a symbolic link).
        mtime: modification time (seconds) seen when planning; apply refuses a file that changed since.
        group: report group id, ``None`` for an image in no group (``unique/``).
        keep: prune only: the group's kept image, which must still exist when the operation runs.
        symlink: ``src`` is a symbolic link (moved or deleted as a link, never followed).
    """

    op: str
    src: str
    dst: str | None
    bytes: int
    mtime: float
    group: int | None
    keep: str | None = None
    symlink: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "src": self.src,
            "dst": self.dst,
            "bytes": self.bytes,
            "mtime": self.mtime,
            "group": self.group,
            "keep": self.keep,
            "symlink": self.symlink,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Operation:
        try:
            op = cls(
                op=str(d["op"]),
                src=_text(d["src"]),
                dst=None if d.get("dst") is None else _text(d["dst"]),
                bytes=int(d["bytes"]),
                mtime=float(d["mtime"]),
                group=None if d.get("group") is None else int(d["group"]),
                keep=None if d.get("keep") is None else _text(d["keep"]),
                symlink=bool(d.get("symlink", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ActionError(f"malformed operation record {dict(d)!r}") from e
        if op.op not in ("move", "copy", "link", "delete") or (op.dst is None) != (op.op == "delete"):
            raise ActionError(f"malformed operation record {dict(d)!r}")
        return op


@dataclass(frozen=True)
class SkippedItem:
    """A file the plan leaves alone although the report asked for it, with a short reason."""

    path: str
    reason: str
    group: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "group": self.group}


@dataclass
class Plan:
    """What ``prune`` or ``group`` would do: printable, JSON-serialisable, computed without writing.

    Attributes:
        command: ``prune`` or ``group``.
        mode: ``move`` | ``delete`` (prune), ``copy`` | ``move`` | ``link`` (group).
        roots: absolute scanned roots (the report's ``paths``).
        dest: absolute output folder (quarantine or group folder), ``None`` for ``prune --delete``.
        operations: the operations, in the order they will run.
        skipped: files left alone, with reasons (the command then reports that not everything was done).
        kept: kept image of every group the plan acts on (never touched by ``prune``).
        notes: informational remarks (e.g. an older report without an ``images`` list).
    """

    command: str
    mode: str
    roots: list[str]
    dest: str | None
    operations: list[Operation] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Bytes leaving the scanned folders (prune only; symbolic links free nothing)."""
        return _bytes_freed(self.command, self.operations)

    def summary(self) -> dict[str, int]:
        counts = {k: 0 for k in ("move", "copy", "link", "delete")}
        for op in self.operations:
            counts[op.op] += 1
        return {
            "operations": len(self.operations),
            **counts,
            "kept": len(self.kept),
            "skipped": len(self.skipped),
            "bytes_freed": self.bytes_freed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "command": self.command,
            "mode": self.mode,
            "roots": list(self.roots),
            "dest": self.dest,
            "summary": self.summary(),
            "operations": [op.to_dict() for op in self.operations],
            "skipped": [s.to_dict() for s in self.skipped],
            "kept": list(self.kept),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        try:
            return cls(
                command=str(d["command"]),
                mode=str(d["mode"]),
                roots=[_text(r) for r in d["roots"]],
                dest=None if d.get("dest") is None else _text(d["dest"]),
                operations=[Operation.from_dict(o) for o in d.get("operations", [])],
                skipped=[
                    SkippedItem(_text(s["path"]), str(s["reason"]), s.get("group"))
                    for s in d.get("skipped", [])
                ],
                kept=[_text(k) for k in d.get("kept", [])],
                notes=[str(n) for n in d.get("notes", [])],
            )
        except (KeyError, TypeError) as e:
            raise ActionError(f"malformed plan: {e}") from e


@dataclass(frozen=True)
class Failure:
    """An operation that could not be performed; nothing was changed for it."""

    op: Operation
    reason: str


@dataclass
class ApplyResult:
    """What :func:`apply` did.

    Attributes:
        manifest: the journal (pass it to :func:`undo`).
        plan: the plan that was executed (the journaled one when an interrupted run was resumed).
        done: operations performed by this run, with the destination really used.
        already_done: operations an earlier, interrupted run had already performed.
        failed: operations that could not be performed (permission denied, vanished, ...).
        skipped: files the plan left alone.
        resumed: an interrupted run recorded in ``manifest`` was completed.
    """

    manifest: Path
    plan: Plan
    done: list[Operation] = field(default_factory=list)
    already_done: list[Operation] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    resumed: bool = False

    @property
    def complete(self) -> bool:
        """Everything the report asked for was done (nothing failed, nothing skipped)."""
        return not self.failed and not self.skipped

    @property
    def bytes_freed(self) -> int:
        return _bytes_freed(self.plan.command, self.done + self.already_done)

    def counts(self) -> dict[str, int]:
        """kept, moved, copied, linked, deleted (this run and resumed), already_done, skipped, failed."""
        ops = self.done + self.already_done
        return {
            "kept": len(self.plan.kept),
            "moved": sum(o.op == "move" for o in ops),
            "copied": sum(o.op == "copy" for o in ops),
            "linked": sum(o.op == "link" for o in ops),
            "deleted": sum(o.op == "delete" for o in ops),
            "already_done": len(self.already_done),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "bytes_freed": self.bytes_freed,
        }


@dataclass
class UndoResult:
    """What :func:`undo` did.

    Attributes:
        restored: original paths a moved file was put back at.
        removed: copies and links made by the command and now removed.
        unchanged: operations with nothing left to undo (never started, or undone by an earlier run).
        unrestorable: files deleted by ``prune --delete``: gone for good.
        failed: ``(path, reason)`` of what could not be undone (left exactly as found).
    """

    manifest: Path
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    unrestorable: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.unrestorable


# ------------------------------------------------------------------------------------------ keep policy


@dataclass(frozen=True)
class _Facts:
    path: str
    size: int
    mtime: float
    width: int
    height: int


def choose_keep(members: Sequence[M], policy: str) -> M:
    """The member of a report group to keep under ``policy`` (same rules as the scanner).

    Args:
        members: report member dicts with ``path``, ``bytes``, ``mtime``, ``width``, ``height``.
        policy: ``resolution`` (largest width x height), ``filesize`` (largest file), ``oldest`` /
            ``newest`` (modification time), ``path`` (first in sorted order). Ties go to the first path.

    Raises:
        ConfigError: unknown policy.
        ActionError: no members, or a member lacks one of the fields.
    """
    if policy not in KEEP_POLICIES:
        raise ConfigError(
            f"keep.policy: {policy!r} is not allowed; allowed values: {', '.join(KEEP_POLICIES)}"
        )
    if not members:
        raise ActionError("cannot choose the image to keep in an empty group")
    from dedup.cluster import choose_keep as choose_keep_index  # one implementation of the policies

    try:
        facts = [
            _Facts(
                str(m["path"]), int(m["bytes"]), float(m.get("mtime", 0.0)), int(m["width"]), int(m["height"])
            )
            for m in members
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ActionError(f"report member lacks path/bytes/width/height: {e}") from e
    return members[choose_keep_index(facts, policy)]


# ------------------------------------------------------------------------------------------ path helpers


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ActionError(f"expected a path string, got {value!r}")
    return value


def _abs(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised; lexical)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    """The deepest scanned root containing ``path`` (a root that is a file maps to its folder)."""
    best: str | None = None
    for root in roots:
        base = root
        if os.path.isfile(root) or root == path:
            base = os.path.dirname(root)
        if _within(path, base) and (best is None or len(base) > len(best)):
            best = base
    return best


def _suffixed(path: str, n: int) -> str:
    head, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if stem == "" or (stem.startswith(".") and not ext):
        stem, ext = name, ""
    return os.path.join(head, f"{stem} ({n}){ext}")


def _free_name(path: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``path`` or the first of ``name (1).ext``, ``name (2).ext``... that is neither on disk nor taken."""
    candidate, n = path, 0
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = _suffixed(path, n)
    return candidate


def _partial(path: str) -> str:
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
    dest, dest_real = _abs(to), os.path.realpath(to)
    inside = any(_within(dest, _abs(p)) or _within(dest_real, os.path.realpath(p)) for p in paths)
    if not inside:
        return []
    return [Path(p) for p in dict.fromkeys([dest, dest_real])]


_ESCAPE_REASON = "reached through a symbolic link to a folder outside the scanned folders"


def _escapes(path: str, roots: Sequence[str]) -> bool:
    """The folder holding ``path`` really lies outside every root (it was reached through a symlink)."""
    parent = os.path.realpath(os.path.dirname(path))
    return not any(
        _within(parent, os.path.realpath(r if os.path.isdir(r) else os.path.dirname(r))) for r in roots
    )


def _check_dest(to: str | os.PathLike[str], roots: Sequence[str]) -> str:
    dest = _abs(to)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise ActionError(f"destination {dest} exists and is not a folder")
    real = os.path.realpath(dest)
    for root in roots:
        rreal = os.path.realpath(root)
        if _within(root, dest) or _within(rreal, real):
            raise ActionError(f"destination {dest} must not be, or contain, the scanned folder {root}")
    return dest


# ------------------------------------------------------------------------------------------ planning


def _report_roots(report: Mapping[str, Any]) -> list[str]:
    paths = report.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ActionError("the report has no 'paths' (the scanned folders); cannot plan file operations")
    return [_abs(p) for p in paths]


def _report_groups(report: Mapping[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """``(id, keep, members)`` of every group, members de-duplicated by path, paths normalised."""
    groups = report.get("groups")
    if not isinstance(groups, list):
        raise ActionError("the report has no 'groups' list")
    out = []
    for g in groups:
        try:
            gid, keep, members = int(g["id"]), _abs(_text(g["keep"])), g["members"]
            seen: dict[str, dict[str, Any]] = {}
            for m in members:
                p = _abs(_text(m["path"]))
                seen.setdefault(p, {**m, "path": p})
        except (KeyError, TypeError, ValueError) as e:
            raise ActionError(f"malformed group in the report: {e}") from e
        out.append((gid, keep, list(seen.values())))
    return out


def _report_policy(report: Mapping[str, Any]) -> str | None:
    keep = report.get("params", {}).get("keep") if isinstance(report.get("params"), Mapping) else None
    if isinstance(keep, Mapping):
        policy = keep.get("policy")
        return policy if isinstance(policy, str) else None
    return keep if isinstance(keep, str) else None


class _Disk:
    """Memoised ``stat`` facts for planning."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[os.stat_result | None, os.stat_result | None, str | None]] = {}

    def get(self, path: str) -> tuple[os.stat_result | None, os.stat_result | None, str | None]:
        """``(lstat, stat, problem)``; ``problem`` is a reason when the file cannot be used."""
        if path not in self._cache:
            self._cache[path] = self._look(path)
        return self._cache[path]

    @staticmethod
    def _look(path: str) -> tuple[os.stat_result | None, os.stat_result | None, str | None]:
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None, None, "missing (moved or deleted since the report)"
        except OSError as e:
            return None, None, f"cannot stat: {e.strerror or e}"
        try:
            st = os.stat(path)
        except OSError:
            return lst, None, "broken symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return lst, st, "not a regular file"
        return lst, st, None

    def problem(self, member: Mapping[str, Any]) -> str | None:
        """Why ``member`` cannot be acted on, comparing the disk with the report; ``None`` when fine."""
        _, st, problem = self.get(member["path"])
        if problem or st is None:
            return problem
        size, mtime = member.get("bytes"), member.get("mtime")
        if isinstance(size, int) and st.st_size != size:
            return f"changed since the report (size {size} -> {st.st_size} bytes)"
        if isinstance(mtime, (int, float)) and abs(st.st_mtime - float(mtime)) > MTIME_TOLERANCE:
            return "changed since the report (modification time)"
        return None

    def identity(self, path: str) -> tuple[int, int] | None:
        _, st, _ = self.get(path)
        return None if st is None else (st.st_dev, st.st_ino)

    def operation(self, op: str, src: str, dst: str | None, group: int | None, keep: str | None) -> Operation:
        lst, st, _ = self.get(src)
        if st is None or lst is None:  # pragma: no cover - callers check problem() first
            raise ActionError(f"cannot stat {src}")
        return Operation(op, src, dst, st.st_size, st.st_mtime, group, keep, stat.S_ISLNK(lst.st_mode))


def plan_prune(
    report: Mapping[str, Any],
    *,
    to: str | os.PathLike[str] | None,
    delete: bool = False,
    keep_policy: str | None = None,
) -> Plan:
    """Plan moving (``to``) or deleting (``delete``) every non-kept member of every group.

    Quarantined files mirror their path relative to the scanned root holding them
    (``/data/a/x.jpg`` scanned as ``/data`` -> ``QUARANTINE/a/x.jpg``); an existing destination gets
    ``" (1)"``, ``" (2)"``... before its extension.

    Safety rules applied here:

    - The kept image of a group is never planned for removal, nor is any member that is the same file
      (same inode: hard link, symbolic link to it, or the kept path listed again under another spelling),
      nor any group's kept image listed as a member of another group.
    - If the kept image is missing, not a regular file, or changed since the report, the whole group is
      left alone (skipped): removing its other members could lose the only good copy.
    - A member missing, changed (size or mtime differ from the report) or outside the scanned roots is
      skipped with its reason.

    Args:
        report: scan report dict (schema version 1); uses ``paths`` and ``groups``.
        to: quarantine folder; must not be, or contain, a scanned root. ``None`` with ``delete=True``.
        delete: delete instead of moving (irreversible).
        keep_policy: re-choose the kept image with this policy when it differs from the report's; ``None``
            keeps the report's choice (including a hand-edited ``keep``).

    Returns:
        The :class:`Plan`; nothing on disk is modified.

    Raises:
        ActionError: both or neither of ``to`` / ``delete``, bad destination, malformed report.
        ConfigError: unknown ``keep_policy``.
    """
    if delete == (to is not None):
        raise ActionError("give exactly one of a quarantine folder (--to) or --delete")
    if keep_policy is not None and keep_policy not in KEEP_POLICIES:
        raise ConfigError(
            f"keep.policy: {keep_policy!r} is not allowed; allowed values: {', '.join(KEEP_POLICIES)}"
        )
    roots = _report_roots(report)
    dest = None if to is None else _check_dest(to, roots)
    rechoose = keep_policy is not None and keep_policy != _report_policy(report)
    groups = _report_groups(report)
    disk = _Disk()
    plan = Plan("prune", "delete" if delete else "move", roots, dest)

    # Pass 1: the kept image of each group, and whether the group can be acted on at all.
    chosen: dict[int, str] = {}
    usable_group: dict[int, bool] = {}
    for gid, keep, members in groups:
        if rechoose and keep_policy is not None:
            usable = [m for m in members if disk.problem(m) is None]
            keep = choose_keep(usable, keep_policy)["path"] if usable else keep
        listed = next((m for m in members if m["path"] == keep), None)
        problem = disk.problem(listed) if listed is not None else disk.get(keep)[2]
        chosen[gid], usable_group[gid] = keep, problem is None
        if problem:
            for m in members:
                if m["path"] != keep:
                    plan.skipped.append(
                        SkippedItem(m["path"], f"group left alone: its kept image {keep} is {problem}", gid)
                    )
        else:
            plan.kept.append(keep)
    protected: dict[tuple[int, int], str] = {}
    protected_real: dict[str, str] = {}
    for k in chosen.values():
        ident = disk.identity(k)
        if ident is not None:
            protected.setdefault(ident, k)
        protected_real.setdefault(os.path.realpath(k), k)

    # Pass 2: the members that go.
    taken: set[str] = set()
    planned: dict[str, int] = {}
    for gid, _, members in groups:
        if not usable_group[gid]:
            continue
        keep_ok = chosen[gid]
        for m in sorted(members, key=lambda m: m["path"]):
            path = m["path"]
            if path == keep_ok:
                continue
            if path in planned:
                plan.notes.append(f"{path} is listed in groups {planned[path]} and {gid}; handled once")
                continue
            ident = disk.identity(path)
            twin = protected.get(ident) if ident is not None else None
            twin = twin or protected_real.get(os.path.realpath(path)) or protected_real.get(path)
            if twin is not None:
                plan.skipped.append(
                    SkippedItem(path, f"same file as the kept image {twin}; never removed", gid)
                )
                continue
            problem = disk.problem(m)
            if problem:
                plan.skipped.append(SkippedItem(path, problem, gid))
                continue
            root = _root_of(path, roots)
            if root is None or _escapes(path, roots):
                reason = "outside the scanned folders" if root is None else _ESCAPE_REASON
                plan.skipped.append(SkippedItem(path, reason, gid))
                continue
            dst = None
            if dest is not None:
                if _within(path, dest):
                    plan.skipped.append(SkippedItem(path, "already inside the quarantine folder", gid))
                    continue
                dst = _free_name(os.path.join(dest, os.path.relpath(path, root)), taken)
                taken.add(dst)
            planned[path] = gid
            plan.operations.append(disk.operation(plan.mode, path, dst, gid, keep_ok))
    return plan


def plan_group(
    report: Mapping[str, Any],
    *,
    to: str | os.PathLike[str],
    mode: str = "copy",
    only_duplicates: bool = False,
) -> Plan:
    """Plan sorting images into one folder per group, plus ``unique/`` for images in no group.

    A report with a ``clusters`` list (``dedup group --method agglomerative|kmeans``) is planned by cluster
    instead: every image goes into its cluster's folder (``cluster-0001/``... or the names of
    ``names.yaml``, see :func:`cluster_folders`), files by path; there is no ``unique/``.

    Group folders are ``group-0001/``, ``group-0002/``... numbered by group size, largest first (ties by
    report id); inside, files keep their base name (kept image first, then by path; clashes get
    ``" (1)"``...). ``unique/`` mirrors each image's path relative to its scanned root. Images in no group
    come from the report's ``images`` list; an older report without it gets an empty ``unique/`` and a note.

    Args:
        report: scan report dict (schema version 1).
        to: output folder; must not be, or contain, a scanned root.
        mode: ``copy`` (default), ``move``, or ``link`` (symbolic links to the originals).
        only_duplicates: leave images in no group alone (no ``unique/``).

    Raises:
        ActionError: bad mode or destination, malformed report.
    """
    if mode not in GROUP_MODES:
        raise ActionError(f"group mode {mode!r} is not allowed; allowed values: {', '.join(GROUP_MODES)}")
    roots = _report_roots(report)
    dest = _check_dest(to, roots)
    groups = sorted(_report_groups(report), key=lambda g: (-len(g[2]), g[0]))
    disk = _Disk()
    plan = Plan("group", mode, roots, dest)
    taken: set[str] = set()
    placed: dict[str, int] = {}

    def add(member: Mapping[str, Any], dst: str, gid: int | None) -> None:
        path = member["path"]
        if path in placed:
            plan.notes.append(f"{path} is listed in group {placed[path]} and again; placed once")
            return
        problem = disk.problem(member)
        if problem is None and _within(path, dest):
            problem = "already inside the output folder"
        if problem is None and mode == "move" and _escapes(path, roots):
            problem = _ESCAPE_REASON
        if problem:
            plan.skipped.append(SkippedItem(path, problem, gid))
            return
        dst = _free_name(dst, taken)
        taken.add(dst)
        placed[path] = gid if gid is not None else 0
        plan.operations.append(disk.operation(mode, path, dst, gid, None))

    clusters = report.get("clusters")
    if isinstance(clusters, list):  # a whole-collection clustering: every image in a cluster folder
        facts = {}
        for im in report.get("images") or []:
            if isinstance(im, Mapping) and isinstance(im.get("path"), str):
                facts[_abs(im["path"])] = im
        folders, notes = cluster_folders(clusters)
        plan.notes.extend(notes)
        if only_duplicates:
            plan.notes.append("--only-duplicates has no effect on clusters: every image is in one")
        for cluster, folder in zip(clusters, folders, strict=True):
            try:
                cid, members = int(cluster["id"]), cluster["members"]
                paths = sorted({_abs(_text(m["path"])) for m in members})
            except (KeyError, TypeError, ValueError) as e:
                raise ActionError(f"malformed cluster in the report: {e}") from e
            for p in paths:
                member = {**facts.get(p, {}), "path": p}
                add(member, os.path.join(dest, folder, os.path.basename(p)), cid)
        return plan

    width = max(4, len(str(len(groups))))
    for number, (gid, keep, members) in enumerate(groups, start=1):
        folder = os.path.join(dest, f"group-{number:0{width}d}")
        plan.kept.append(keep)
        for m in sorted(members, key=lambda m: (m["path"] != keep, m["path"])):
            add(m, os.path.join(folder, os.path.basename(m["path"])), gid)

    if not only_duplicates:
        images = report.get("images")
        if not isinstance(images, list):
            plan.notes.append(
                "the report has no 'images' list (made by an older dedup): unique/ is left empty; "
                "re-run the scan to include images in no group"
            )
        else:
            grouped = {m["path"] for _, _, members in groups for m in members}
            others: dict[str, dict[str, Any]] = {}
            for im in images:
                try:
                    p = _abs(_text(im["path"]))
                except (KeyError, TypeError) as e:
                    raise ActionError(f"malformed image entry in the report: {im!r}") from e
                if p not in grouped:
                    others.setdefault(p, {**im, "path": p})
            for p, im in sorted(others.items()):
                root = _root_of(p, roots)
                if root is None:
                    plan.skipped.append(SkippedItem(p, "outside the scanned folders", None))
                    continue
                add(im, os.path.join(dest, "unique", os.path.relpath(p, root)), None)
    return plan


# ------------------------------------------------------------------------------------ cluster names

NAMES_FILE = "names.yaml"
_MAX_NAME = 100


def sanitize_folder_name(name: object) -> str | None:
    """A cluster name made safe as one folder name, or None when nothing usable is left.

    Path separators, control characters and characters Windows forbids become ``_``; whitespace is
    collapsed; a leading ``.`` becomes ``_`` (no hidden folders, no ``..``); at most 100 characters.
    """
    if name is None or isinstance(name, (bool, dict, list)):
        return None
    text = " ".join(str(name).split())
    text = "".join("_" if (ch in '/\\:*?"<>|' or ord(ch) < 32 or ord(ch) == 127) else ch for ch in text)
    text = text[:_MAX_NAME].strip()
    if text.startswith("."):
        text = "_" + text[1:]
    return text or None


def cluster_folders(clusters: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The folder of each cluster of a report, and notes about names that had to change.

    A cluster's folder is its sanitised ``name`` (see :func:`sanitize_folder_name`), or
    ``cluster-0001``-style when it has none. Clusters the user gave the same name (``"named": true``,
    compared case-insensitively) share one folder -- that is how clusters are merged by hand; a generated
    name that clashes with an earlier folder gets `` (2)``, `` (3)``....

    Returns:
        ``(folders, notes)``: one folder name per cluster, in order.
    """
    width = max(4, len(str(len(clusters))))
    folders: list[str] = []
    notes: list[str] = []
    owner: dict[str, tuple[str, bool, int]] = {}  # lower-case name -> (folder, named by user, first id)
    for i, cluster in enumerate(clusters):
        cid = cluster.get("id", i + 1)
        default = f"cluster-{int(cid):0{width}d}"
        raw = cluster.get("name")
        named = bool(cluster.get("named"))
        name = sanitize_folder_name(raw)
        if name is None:
            if raw not in (None, ""):
                notes.append(f"cluster {cid}: name {raw!r} is not usable as a folder name; using {default}")
            name, named = default, False
        elif name != raw:
            notes.append(f"cluster {cid}: name {raw!r} becomes the folder {name!r}")
        key = name.lower()
        if key in owner:
            folder, owner_named, first = owner[key]
            if named and owner_named:
                notes.append(f"clusters {first} and {cid} are both named {folder!r}: they share that folder")
                folders.append(folder)
                continue
            n = 2
            while f"{name} ({n})".lower() in owner:
                n += 1
            new = f"{name} ({n})"
            notes.append(f"cluster {cid}: folder {name!r} is taken by cluster {first}; using {new!r}")
            name, key = new, new.lower()
        owner[key] = (name, named, int(cid))
        folders.append(name)
    return folders, notes


def load_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a ``names.yaml`` (cluster id -> name) as written by :func:`write_names` and edited by a user.

    Entries whose name is empty or null are left out (those clusters keep their numbered folder).

    Raises:
        InputError: missing or unreadable file, not YAML, not a mapping, or an id that is not a positive
            integer.
    """
    import yaml

    from dedup.errors import InputError

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"names file {p} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read names file {p}: {e}") from e
    except yaml.YAMLError as e:
        raise InputError(f"names file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InputError(f"names file {p} must map cluster ids to names (like '3: shirts'), got {data!r}")
    names: dict[int, str] = {}
    for key, value in data.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise InputError(f"names file {p}: {key!r} is not a cluster id (a positive integer)")
        if int(key) < 1:
            raise InputError(f"names file {p}: {key!r} is not a cluster id (a positive integer)")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, (dict, list)):
            raise InputError(f"names file {p}: the name of cluster {key} must be text, got {value!r}")
        names[int(key)] = str(value)
    return names


def with_names(report: Mapping[str, Any], names: Mapping[int, str]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a clustering report whose clusters carry the user's ``names`` (``"named": true``).

    Returns:
        ``(report, notes)``: notes list names for ids the report does not have and clusters left unnamed.

    Raises:
        ActionError: the report has no clusters.
    """
    clusters = report.get("clusters")
    if not isinstance(clusters, list):
        raise ActionError("--names needs a clustering (--method agglomerative or kmeans)")
    ids = {int(c["id"]) for c in clusters}
    out = []
    for c in clusters:
        cid = int(c["id"])
        out.append({**c, "name": names[cid], "named": True} if cid in names else dict(c))
    notes = []
    unknown = sorted(set(names) - ids)
    if unknown:
        notes.append(
            f"names.yaml names clusters {', '.join(map(str, unknown))}, which this run does not have "
            f"({len(ids)} clusters); ignored"
        )
    unnamed = sorted(ids - set(names))
    if unnamed and names:
        notes.append(
            f"clusters {', '.join(map(str, unnamed))} have no name in names.yaml; they keep numbered folders"
        )
    return {**report, "clusters": out}, notes


def names_yaml(report: Mapping[str, Any]) -> str:
    """The text of ``names.yaml`` for a clustering report: ``id: "name"  # size, an example image``."""
    lines = [
        "# Cluster names for `dedup group ... --names names.yaml`: edit the names (not the ids), then re-run",
        "# the same group command with --names (undo this run first, or choose a new --to folder).",
        "# Clusters given the same name share a folder; a removed line keeps its numbered folder.",
    ]
    for c in report.get("clusters", []):
        example = os.path.basename(c["members"][0]["path"]) if c.get("members") else ""
        size = c.get("size", len(c.get("members", [])))
        name = json.dumps(str(c["name"]), ensure_ascii=False)
        example = " ".join(example.split())
        lines.append(f"{int(c['id'])}: {name}  # {size} images, e.g. {example}")
    return "\n".join(lines) + "\n"


def write_names(report: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write :func:`names_yaml` into ``folder`` as ``names.yaml``, never overwriting a different file.

    Returns:
        the path written: ``names.yaml``, ``names (1).yaml``... (or the existing file when it already holds
        exactly this text).
    """
    text = names_yaml(report)
    target = os.path.join(os.fspath(folder), NAMES_FILE)
    n = 0
    candidate = target
    while os.path.lexists(candidate):
        try:
            if Path(candidate).read_text(encoding="utf-8") == text:
                return Path(candidate)
        except (OSError, UnicodeDecodeError):
            pass
        n += 1
        candidate = _suffixed(target, n)
    try:
        with open(candidate, "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ActionError(f"cannot write {candidate}: {e.strerror or e}") from e
    return Path(candidate)


def write_cluster_files(report: Mapping[str, Any], dest: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``clusters.csv`` (replaced) and ``names.yaml`` (never overwritten, see :func:`write_names`) of a
    clustering report into the output folder ``dest`` (created if needed).

    Returns:
        ``(clusters_csv_path, names_yaml_path)``.
    """
    from dedup.report import write_clusters_csv

    folder = _abs(dest)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ActionError(f"cannot create {folder}: {e.strerror or e}") from e
    csv_path = write_clusters_csv(dict(report), os.path.join(folder, CLUSTERS_FILE))
    return csv_path, write_names(report, folder)


CLUSTERS_FILE = "clusters.csv"


def check_group_reports(
    reports: Sequence[str | os.PathLike[str]],
    to: str | os.PathLike[str],
    *,
    folder_names: Iterable[str] = (),
    dry_run: bool = False,
) -> list[Path]:
    """Validate the ``--report`` destinations of ``dedup group`` before the (possibly long) scan starts.

    A report may lie outside the output folder ``to`` (anywhere :func:`dedup.report.check_destination`
    accepts), or directly inside it, beside ``clusters.csv`` and ``names.yaml``; it is never journaled, so
    ``dedup undo`` leaves it, like those two files. Inside ``to`` it must not be in a subfolder (those hold
    the placed files), be called ``clusters.csv``, or be called like one of ``folder_names`` (the folders
    the names of names.yaml give, compared case-insensitively). An output folder that does not exist yet is
    created when the report is written -- except with ``dry_run``, which creates nothing, so there the report
    must go into an existing folder.

    Args:
        reports: the report paths (``.json``, ``.csv``, ``.html``).
        to: the output folder of the run.
        folder_names: folder names the run may create directly in ``to`` besides ``group-NNNN``,
            ``unique`` and ``cluster-NNNN`` (which no report extension can match).
        dry_run: the run creates nothing.

    Returns:
        the report paths, as given.

    Raises:
        InputError: a destination that is unusable or would collide with the files being placed.
    """
    from dedup.errors import InputError
    from dedup.report import FORMATS, check_destination

    dest, dest_real = _abs(to), os.path.realpath(to)
    taken = {name.lower() for name in folder_names} | {CLUSTERS_FILE}
    out = []
    for report in reports:
        p = Path(report)
        where, where_real = _abs(p), os.path.join(os.path.realpath(p.parent), p.name)
        if where in (dest, dest_real) or where_real in (dest, dest_real):
            raise InputError(f"report {p} is the output folder; give a file name")
        if not (_within(where, dest) or _within(where_real, dest_real)):
            out.append(check_destination(p))
            continue
        if os.path.dirname(where) != dest and os.path.dirname(where_real) != dest_real:
            raise InputError(
                f"report {p} would be in a subfolder of the output folder {dest}, where the images are "
                "placed; write it into the output folder itself or outside it"
            )
        if p.name.lower() in taken:
            raise InputError(
                f"report {p} would collide with {p.name}, which this run writes into {dest}; "
                "choose another name"
            )
        if p.suffix.lower() not in FORMATS or os.path.isdir(dest):
            out.append(check_destination(p))
            continue
        if os.path.lexists(dest):
            raise InputError(f"destination {dest} exists and is not a folder")
        if dry_run:
            raise InputError(
                f"cannot write report {p}: --dry-run creates nothing and the output folder {dest} does not "
                "exist yet; write the report elsewhere"
            )
        parent = os.path.dirname(dest)
        while parent and not os.path.isdir(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write report {p}: cannot create {dest} (permission denied)")
        out.append(p)
    return out


def check_plan_reports(plan: Plan, reports: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a plan that would place a file at, or inside, one of the report paths (a last check after
    planning; :func:`check_group_reports` already rules this out before the scan).

    Raises:
        ActionError: an operation's destination is a report path or lies below one.
    """
    targets = {_abs(r) for r in reports} | {os.path.realpath(r) for r in reports}
    for op in plan.operations:
        if op.dst is not None and any(op.dst == t or _within(op.dst, t) for t in targets):
            raise ActionError(f"{op.src} would be placed at {op.dst}, where a --report is written")


def _bytes_freed(command: str, ops: Iterable[Operation]) -> int:
    if command != "prune":
        return 0
    return sum(op.bytes for op in ops if op.op in ("move", "delete") and not op.symlink)


# ------------------------------------------------------------------------------------------ journal


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Journal:
    """Append-only JSON-lines file; every record is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        try:
            self._f = open(path, "ab")  # noqa: SIM115 - closed in close()
            if not new and path.stat().st_size:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":  # a record cut short by a kill: start on a fresh line
                        self._f.write(b"\n")
        except OSError as e:
            raise ActionError(f"cannot write manifest {path}: {e.strerror or e}") from e
        if new:
            _fsync_dir(str(path.parent))

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self._f.write(line.encode("utf-8"))
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise ActionError(f"cannot write manifest {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        self._f.close()


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a manifest. A last line cut short by a kill is ignored.

    Raises:
        ActionError: missing or unreadable file, malformed record, or no version-1 header.
    """
    p = Path(path)
    try:
        lines = p.read_bytes().split(b"\n")
    except FileNotFoundError as e:
        raise ActionError(f"manifest {p} does not exist") from e
    except OSError as e:
        raise ActionError(f"cannot read manifest {p}: {e.strerror or e}") from e
    records: list[dict[str, Any]] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if i == last:
                break
            raise ActionError(f"manifest {p} line {i + 1} is not a JSON record") from e
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise ActionError(f"manifest {p} line {i + 1} is not a manifest record")
        records.append(rec)
    if not records or records[0].get("type") != "header" or records[0].get("version") != MANIFEST_VERSION:
        raise ActionError(f"{p} is not a dedup manifest (version {MANIFEST_VERSION})")
    return records


@dataclass
class _State:
    """A manifest's records folded into per-operation state."""

    header: dict[str, Any]
    plan: Plan
    operations: list[Operation]
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    mkdirs: list[str] = field(default_factory=list)
    ended: bool = False
    undo_done: set[int] = field(default_factory=set)
    undone: bool = False


def _fold(records: list[dict[str, Any]], manifest: Path) -> _State:
    header = records[0]
    plans = [r for r in records if r["type"] == "plan"]
    if not plans or not isinstance(plans[0].get("plan"), Mapping):
        raise ActionError(f"manifest {manifest} has no plan record")
    plan = Plan.from_dict(plans[0]["plan"])
    state = _State(header, plan, list(plan.operations))
    for r in records[1:]:
        kind = r["type"]
        idx = r.get("index")
        if kind == "plan-extend":
            state.operations.extend(Operation.from_dict(o) for o in r.get("operations", []))
        elif kind == "mkdir":
            state.mkdirs.append(_text(r.get("path")))
        elif kind in ("intent", "done", "undo-intent", "undo-done", "undo-failed", "failed"):
            if not isinstance(idx, int) or not 0 <= idx < len(state.operations):
                raise ActionError(f"manifest {manifest}: record {r!r} names no planned operation")
            if kind == "intent":
                state.intents[idx] = r
                state.done.pop(idx, None)
            elif kind == "done":
                state.done[idx] = r
            elif kind == "undo-done":
                state.undo_done.add(idx)
        elif kind == "end":
            state.ended = True
        if kind.startswith("undo"):
            state.undone = True
    return state


def _run_key(command: str, mode: str, roots: Sequence[str], dest: str | None) -> tuple[Any, ...]:
    return (command, mode, tuple(roots), dest)


def default_state_dir() -> Path:
    """Where ``prune --delete`` keeps its manifests: ``$XDG_STATE_HOME/dedup`` (``~/.local/state/dedup``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "dedup"


def _manifest_dir(plan: Plan, state_dir: str | os.PathLike[str] | None) -> Path:
    if plan.dest is not None:
        return Path(plan.dest)
    return Path(state_dir) if state_dir is not None else default_state_dir()


def find_resumable(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The manifest of an interrupted run of the same command (same mode, roots and destination), if any.

    Applying ``plan`` to it completes that run instead of starting a new one (nothing is done twice).
    Manifests that finished, or that were (partly) undone, are never resumed.
    """
    folder = _manifest_dir(plan, state_dir)
    if not folder.is_dir():
        return None
    key = _run_key(plan.command, plan.mode, plan.roots, plan.dest)
    for path in sorted(folder.glob(f"dedup-{plan.command}-*.jsonl"), key=lambda p: p.name, reverse=True):
        try:
            state = _fold(read_manifest(path), path)
        except ActionError:
            continue
        h = state.header
        if state.ended or state.undone:
            continue
        if (
            _run_key(h.get("command", ""), h.get("mode", ""), h.get("scanned_roots", []), h.get("dest"))
            == key
        ):
            return path
    return None


def new_manifest_path(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """A fresh manifest path: ``DEST/dedup-<command>-<mode>-<UTC time>.jsonl`` (``--delete``: state dir)."""
    folder = _manifest_dir(plan, state_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(_free_name(str(folder / f"dedup-{plan.command}-{plan.mode}-{stamp}.jsonl")))


# ------------------------------------------------------------------------------------------ file primitives

_kill_counts: dict[str, int] = {}


def _kill_point(phase: str) -> None:
    """Tests only: ``DEDUP_TEST_KILL_AFTER=phase:N`` SIGKILLs this process at the N-th ``phase``."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != phase:
        return
    _kill_counts[phase] = _kill_counts.get(phase, 0) + 1
    if n.isdigit() and _kill_counts[phase] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _same_content(a: str, b: str) -> bool:
    """Two paths hold the same thing: equal link targets for symbolic links, else equal size + sha256."""
    la, lb = os.lstat(a), os.lstat(b)
    if stat.S_ISLNK(la.st_mode) or stat.S_ISLNK(lb.st_mode):
        return stat.S_ISLNK(la.st_mode) and stat.S_ISLNK(lb.st_mode) and os.readlink(a) == os.readlink(b)
    return la.st_size == lb.st_size and _sha256(a) == _sha256(b)


def _place(tmp: str, dst: str) -> None:
    """Give the finished temporary file ``tmp`` its final name ``dst``, never replacing an existing file."""
    try:
        os.link(tmp, dst, follow_symlinks=False)
    except FileExistsError:
        os.unlink(tmp)
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # filesystem without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "destination exists", dst) from e
        os.rename(tmp, dst)
        return
    os.unlink(tmp)


def _copy_verified(src: str, dst: str) -> str:
    """Copy ``src`` (its content, following symbolic links) to the new file ``dst``, durably and verified.

    The data goes to a temporary name next to ``dst``, is fsynced, re-read and compared with the source
    (size and sha256), and only then appears under ``dst``.

    Returns:
        The sha256 hex digest of the copied content.
    """
    tmp = _partial(dst)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(tmp, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    try:
        st = os.stat(src)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        digest = h.hexdigest()
        if os.path.getsize(tmp) != size or _sha256(tmp) != digest or st.st_size != size:
            raise ActionError(f"copy of {src} does not match the original (size or sha256); not used")
        _place(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(dst))
    return digest


def _move(src: str, dst: str) -> str | None:
    """Move ``src`` (a symbolic link is moved as a link) to the new path ``dst``; never overwrites.

    Within a filesystem this is one ``os.rename``. Across filesystems: copy to a temporary name, fsync,
    verify size + sha256, give it its final name, then unlink the source.

    Returns:
        The sha256 of the content when it was copied across filesystems, else ``None``.
    """
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", dst)
    try:
        os.rename(src, dst)
        return None
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if os.path.islink(src):
        tmp = _partial(dst)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.readlink(src), tmp)
        _place(tmp, dst)
        digest = None
    else:
        digest = _copy_verified(src, dst)
    _kill_point("copied")
    os.unlink(src)
    _fsync_dir(os.path.dirname(src))
    return digest


def _makedirs(path: str, journal: _Journal | None, within: str | None) -> list[str]:
    """Create ``path`` and missing parents; each new folder is journaled before it is made."""
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", p)
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made = []
    for d in reversed(missing):
        if journal is not None and within is not None and _within(d, within):
            journal.write({"type": "mkdir", "path": d})
        os.mkdir(d)
        made.append(d)
    return made


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        if isinstance(e, PermissionError):
            reason = "permission denied"
        elif isinstance(e, FileNotFoundError):
            reason = "vanished"
        return f"{reason}{f' ({e.filename})' if e.filename else ''}"
    return str(e)


# ------------------------------------------------------------------------------------------ apply


def apply(plan: Plan, manifest: str | os.PathLike[str], progress: ProgressFn | None = None) -> ApplyResult:
    """Perform ``plan`` under a write-ahead journal written to ``manifest``.

    If ``manifest`` already holds an interrupted run of the same command (see :func:`find_resumable`), that
    run is completed: operations recorded as done are not repeated, an operation whose ``intent`` has no
    ``done`` is checked on disk (finished, half-finished across filesystems, or not started), and the
    journaled plan is followed, plus any operation of ``plan`` it did not contain.

    A file that cannot be acted on (permission denied, vanished, changed since planning, destination
    folder read-only, its group's kept image gone) is recorded as failed and the rest continues.

    Args:
        plan: from :func:`plan_prune` / :func:`plan_group`.
        manifest: journal path (JSON lines), normally :func:`find_resumable` or :func:`new_manifest_path`.
        progress: optional callback ``(phase, done, total)`` with phase ``"apply"``.

    Returns:
        :class:`ApplyResult`; ``result.complete`` is False when anything failed or was skipped.

    Raises:
        ActionError: the manifest cannot be written, or belongs to another / finished / undone run.
    """
    path = Path(_abs(manifest))
    if path.exists() and path.stat().st_size:
        state = _fold(read_manifest(path), path)
        h = state.header
        key = _run_key(h.get("command", ""), h.get("mode", ""), h.get("scanned_roots", []), h.get("dest"))
        if state.ended or state.undone or key != _run_key(plan.command, plan.mode, plan.roots, plan.dest):
            raise ActionError(
                f"manifest {path} belongs to a finished, undone or different run; use a new manifest"
            )
        journal = _Journal(path)
        journal.write({"type": "resume", "created": _now()})
        known = {(op.op, op.src) for op in state.operations}
        extra = [op for op in plan.operations if (op.op, op.src) not in known]
        if extra:
            journal.write({"type": "plan-extend", "operations": [op.to_dict() for op in extra]})
            state.operations.extend(extra)
        sources = {op.src for op in state.operations}
        result = ApplyResult(
            path, state.plan, resumed=True, skipped=[s for s in plan.skipped if s.path not in sources]
        )
        result.plan.operations = list(state.operations)
    else:
        created = _makedirs(str(path.parent), None, None)
        journal = _Journal(path)
        roots = list(plan.roots) + ([plan.dest] if plan.dest is not None else [])
        journal.write(
            {
                "type": "header",
                "version": MANIFEST_VERSION,
                "tool": f"dedup {__version__}",
                "command": plan.command,
                "mode": plan.mode,
                "created": _now(),
                "scanned_roots": list(plan.roots),
                "dest": plan.dest,
                "roots": roots,
                "irreversible": plan.mode == "delete",
                "note": (
                    "files deleted by this run cannot be restored by 'dedup undo'"
                    if plan.mode == "delete"
                    else "reverse with: dedup undo <this file>"
                ),
                "created_dirs": created,
            }
        )
        journal.write({"type": "plan", "plan": plan.to_dict()})
        state = _State({}, plan, list(plan.operations))
        result = ApplyResult(path, plan, skipped=list(plan.skipped))
    try:
        total = len(state.operations)
        for i, op in enumerate(state.operations):
            if progress:
                progress("apply", i, total)
            if i in state.done:
                result.already_done.append(_with_dst(op, state.done[i].get("dst")))
                continue
            try:
                if i in state.intents and _finish_interrupted(op, state.intents[i], journal, i):
                    result.already_done.append(_with_dst(op, state.intents[i].get("dst")))
                    continue
                result.done.append(_perform(op, i, plan.dest, journal))
            except (OSError, ActionError) as e:
                reason = _describe(e)
                journal.write({"type": "failed", "index": i, "reason": reason})
                result.failed.append(Failure(op, reason))
        if progress:
            progress("apply", total, total)
        journal.write(
            {
                "type": "end",
                "created": _now(),
                "done": len(result.done) + len(result.already_done),
                "failed": len(result.failed),
            }
        )
    finally:
        journal.close()
    return result


def _with_dst(op: Operation, dst: Any) -> Operation:
    if op.dst is None or not isinstance(dst, str) or dst == op.dst:
        return op
    return Operation(op.op, op.src, dst, op.bytes, op.mtime, op.group, op.keep, op.symlink)


def _perform(op: Operation, index: int, dest: str | None, journal: _Journal) -> Operation:
    """Check, journal (intent), do, journal (done) one operation; returns it with the destination used."""
    try:
        st = os.lstat(op.src)
    except FileNotFoundError as e:
        raise ActionError(f"{op.src} vanished since planning") from e
    if stat.S_ISLNK(st.st_mode) != op.symlink or (
        not op.symlink and (st.st_size != op.bytes or abs(st.st_mtime - op.mtime) > MTIME_TOLERANCE)
    ):
        raise ActionError(f"{op.src} changed since planning; left alone")
    if op.keep is not None:
        try:
            if not stat.S_ISREG(os.stat(op.keep).st_mode):
                raise ActionError(
                    f"the kept image {op.keep} is not a regular file any more; {op.src} left alone"
                )
        except FileNotFoundError as e:
            raise ActionError(f"the kept image {op.keep} is gone; {op.src} left alone") from e
    dst = op.dst
    if dst is not None:
        _makedirs(os.path.dirname(dst), journal, dest)
        dst = _free_name(dst)  # re-checked now: something may have appeared there since planning
        if os.path.lexists(_partial(dst)):
            os.unlink(_partial(dst))
    journal.write({"type": "intent", "index": index, "op": op.op, "src": op.src, "dst": dst})
    _kill_point("intent")
    digest: str | None = None
    if dst is None:
        os.unlink(op.src)
    elif op.op == "move":
        digest = _move(op.src, dst)
    elif op.op == "copy":
        digest = _copy_verified(op.src, dst)
    else:
        os.symlink(op.src, dst)
    record: dict[str, Any] = {"type": "done", "index": index, "dst": dst}
    if digest is not None:
        record["sha256"] = digest
    journal.write(record)
    _kill_point("done")
    return _with_dst(op, dst)


def _finish_interrupted(op: Operation, intent: Mapping[str, Any], journal: _Journal, index: int) -> bool:
    """Settle an operation whose ``intent`` has no ``done``: True if its effect is (now) complete on disk.

    False means it had not started (the caller performs it afresh); a half-finished cross-filesystem move
    (both copies present and identical) is finished by unlinking the source.
    """
    src, dst = op.src, intent.get("dst")
    if op.op == "delete":
        if os.path.lexists(src):
            return False
        journal.write({"type": "done", "index": index, "dst": None, "settled": True})
        return True
    if not isinstance(dst, str):
        return False
    src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
    if src_there and os.path.lexists(_partial(dst)):
        os.unlink(_partial(dst))
    finished = False
    if op.op == "move":
        if dst_there and not src_there:
            finished = True
        elif dst_there and src_there and _same_content(src, dst):
            os.unlink(src)  # copied across filesystems and verified; the source was not yet removed
            finished = True
        elif dst_there:
            raise ActionError(f"{src} and {dst} both exist and differ; left both alone")
    elif op.op == "copy":
        if dst_there and src_there and _same_content(src, dst):
            finished = True
        elif dst_there:
            raise ActionError(f"{dst} exists but is not a copy of {src}; left alone")
    elif op.op == "link":
        if os.path.islink(dst) and os.readlink(dst) == src:
            finished = True
        elif dst_there:
            raise ActionError(f"{dst} exists but is not the link to {src}; left alone")
    if finished:
        journal.write({"type": "done", "index": index, "dst": dst, "settled": True})
    return finished


# ------------------------------------------------------------------------------------------ undo


def _check_roots(roots: Any, manifest: Path) -> list[str]:
    if not isinstance(roots, list) or not roots:
        raise ActionError(f"manifest {manifest} records no folders; refusing to undo")
    out = []
    for r in roots:
        if (
            not isinstance(r, str)
            or not os.path.isabs(r)
            or os.path.normpath(r) != r
            or r == os.path.dirname(r)
        ):
            raise ActionError(f"manifest {manifest} records an invalid folder {r!r}; refusing to undo")
        out.append(r)
    return out


def _check_inside(p: Any, roots: Sequence[str], manifest: Path, *, real: bool = True) -> None:
    """Refuse a manifest path that is not absolute, not normalised, or outside the recorded folders.

    With ``real``, the folder holding ``p`` must also really (symbolic links resolved) lie inside one.
    """
    if not isinstance(p, str) or not os.path.isabs(p) or os.path.normpath(p) != p:
        raise ActionError(
            f"manifest {manifest} refers to {p!r}, which is not a clean absolute path; "
            "refusing to undo anything"
        )
    if not any(_within(p, r) and p != r for r in roots):
        raise ActionError(
            f"manifest {manifest} refers to {p}, outside the folders it recorded "
            f"({', '.join(roots)}); refusing to undo anything"
        )
    if real and _escapes(p, roots):
        raise ActionError(
            f"manifest {manifest} refers to {p}, which leads outside the folders it recorded "
            "through a symbolic link; refusing to undo anything"
        )


def _validated(manifest: Path) -> _State:
    records = read_manifest(manifest)
    state = _fold(records, manifest)
    h = state.header
    roots = _check_roots(h.get("roots"), manifest)
    dest = h.get("dest")
    scanned = h.get("scanned_roots")
    if (
        not isinstance(scanned, list)
        or not set(scanned) <= set(roots)
        or (dest is not None and dest not in roots)
    ):
        raise ActionError(f"manifest {manifest} has an inconsistent header; refusing to undo")
    if dest is not None and not _within(os.path.realpath(manifest), os.path.realpath(dest)):
        raise ActionError(
            f"manifest {manifest} is not inside the folder it records ({dest}); refusing to undo"
        )
    for op in state.operations:  # undo writes at a move's source; only reads a copy's or link's source
        _check_inside(op.src, roots, manifest, real=op.op == "move")
        if op.dst is not None:
            _check_inside(op.dst, roots, manifest)
        if op.keep is not None:
            _check_inside(op.keep, roots, manifest, real=False)
    for i, r in state.intents.items():
        if r.get("src") != state.operations[i].src:
            raise ActionError(f"manifest {manifest}: intent {i} does not match its planned operation")
    for r in records[1:]:
        for key in ("dst", "path"):
            if r.get(key) is not None:
                _check_inside(r[key], roots, manifest)
    return state


def undo(manifest: str | os.PathLike[str], progress: ProgressFn | None = None) -> UndoResult:
    """Reverse what the run journaled in ``manifest`` did; safe to run again, and after a kill.

    Moved files go back to their original path (byte-identical; never over an existing file), copies and
    links the run made are removed only while they are still exactly what it made (sha256 / link target),
    folders it created are removed when empty. Operations interrupted between ``intent`` and ``done`` are
    settled by looking at the disk. Undo journals itself into the same manifest (``undo-*`` records).

    Files deleted by ``prune --delete`` cannot be restored: they are listed in ``unrestorable``.

    Args:
        manifest: the manifest printed by ``prune`` / ``group``.
        progress: optional callback ``(phase, done, total)`` with phase ``"undo"``.

    Raises:
        ActionError: unreadable or malformed manifest, or one whose paths lead outside the folders recorded
            in its header (``..`` components, other absolute paths, symbolic-link escapes). Nothing is
            touched in that case.
    """
    path = Path(_abs(manifest))
    state = _validated(path)
    result = UndoResult(path)
    todo = sorted(state.intents, reverse=True)
    result.unchanged += len(state.operations) - len(todo)
    journal = _Journal(path)
    try:
        journal.write({"type": "undo-start", "created": _now()})
        for n, i in enumerate(todo):
            if progress:
                progress("undo", n, len(todo))
            if i in state.undo_done:
                result.unchanged += 1
                if state.operations[i].op == "delete" and not os.path.lexists(state.operations[i].src):
                    result.unrestorable.append(state.operations[i].src)
                continue
            op, intent = state.operations[i], state.intents[i]
            journal.write({"type": "undo-intent", "index": i})
            _kill_point("undo-intent")
            try:
                outcome = _undo_one(op, intent, state.done.get(i), result)
            except (OSError, ActionError) as e:
                reason = _describe(e)
                journal.write({"type": "undo-failed", "index": i, "reason": reason})
                result.failed.append((op.src, reason))
                continue
            journal.write({"type": "undo-done", "index": i, "outcome": outcome})
            _kill_point("undo-done")
        if progress:
            progress("undo", len(todo), len(todo))
        for d in reversed(state.mkdirs):
            with contextlib.suppress(OSError):  # not empty (files it did not make, the manifest) or gone
                os.rmdir(d)
        journal.write(
            {
                "type": "undo-end",
                "created": _now(),
                "restored": len(result.restored),
                "removed": len(result.removed),
                "failed": len(result.failed),
                "unrestorable": len(result.unrestorable),
            }
        )
    finally:
        journal.close()
    return result


def _undo_one(
    op: Operation, intent: Mapping[str, Any], done: Mapping[str, Any] | None, result: UndoResult
) -> str:
    src = op.src
    dst = intent.get("dst")
    if op.op == "delete":
        if os.path.lexists(src):
            result.unchanged += 1
            return "not deleted"
        result.unrestorable.append(src)
        return "deleted permanently"
    if not isinstance(dst, str):
        raise ActionError(f"manifest intent for {src} has no destination")
    src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
    if src_there and os.path.lexists(_partial(dst)):
        os.unlink(_partial(dst))  # a copy cut short by the kill
    if op.op == "move":
        if dst_there and os.path.lexists(_partial(src)):
            os.unlink(_partial(src))  # an earlier undo's copy back, cut short
        if dst_there and not src_there:
            if not op.symlink:
                st = os.stat(dst)
                if st.st_size != op.bytes or abs(st.st_mtime - op.mtime) > MTIME_TOLERANCE:
                    raise ActionError(f"{dst} changed since it was moved there; left in place")
            _makedirs(os.path.dirname(src), None, None)
            _move(dst, src)
            result.restored.append(src)
            return "restored"
        if dst_there and src_there:
            if _same_content(src, dst):  # cross-filesystem move stopped before unlinking the source
                os.unlink(dst)
                result.restored.append(src)
                return "restored"
            raise ActionError(f"both {src} and {dst} exist and differ; left both alone")
        if src_there:
            result.unchanged += 1
            return "already in place"
        raise ActionError(f"{src} is neither at its original path nor at {dst}")
    if op.op == "copy":
        if not dst_there:
            result.unchanged += 1
            return "absent"
        expected = done.get("sha256") if done else None
        if os.path.islink(dst) or (expected is None and not src_there):
            raise ActionError(f"{dst} cannot be verified as the copy dedup made; left in place")
        same = _sha256(dst) == expected if isinstance(expected, str) else _same_content(src, dst)
        if not same:
            raise ActionError(f"{dst} was modified after dedup copied it; left in place")
        os.unlink(dst)
        result.removed.append(dst)
        return "removed"
    # link
    if not dst_there:
        result.unchanged += 1
        return "absent"
    if not (os.path.islink(dst) and os.readlink(dst) == src):
        raise ActionError(f"{dst} is no longer the link dedup made to {src}; left in place")
    os.unlink(dst)
    result.removed.append(dst)
    return "removed"
