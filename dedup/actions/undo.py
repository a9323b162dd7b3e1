"""Reversing a prune or group run from its manifest: moved files back byte-identical, copies and links removed
only while they are what the run made; the manifest is checked before anything is touched."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup.actions.fileops import checkpoint, describe, makedirs, move, same_content, sha256
from dedup.actions.journal import Journal, ManifestState, fold, now, read_manifest
from dedup.actions.paths import absolute, escapes, partial_name, within
from dedup.actions.plan import MTIME_TOLERANCE, Operation
from dedup.errors import ActionError

ProgressFn = Callable[[str, int, "int | None"], None]


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
    if not any(within(p, r) and p != r for r in roots):
        raise ActionError(
            f"manifest {manifest} refers to {p}, outside the folders it recorded "
            f"({', '.join(roots)}); refusing to undo anything"
        )
    if real and escapes(p, roots):
        raise ActionError(
            f"manifest {manifest} refers to {p}, which leads outside the folders it recorded "
            "through a symbolic link; refusing to undo anything"
        )


def _validated(manifest: Path) -> ManifestState:
    records = read_manifest(manifest)
    state = fold(records, manifest)
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
    if dest is not None and not within(os.path.realpath(manifest), os.path.realpath(dest)):
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
    path = Path(absolute(manifest))
    state = _validated(path)
    result = UndoResult(path)
    todo = sorted(state.intents, reverse=True)
    result.unchanged += len(state.operations) - len(todo)
    journal = Journal(path)
    try:
        journal.write({"type": "undo-start", "created": now()})
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
            checkpoint("undo-intent")
            try:
                outcome = _undo_one(op, intent, state.done.get(i), result)
            except (OSError, ActionError) as e:
                reason = describe(e)
                journal.write({"type": "undo-failed", "index": i, "reason": reason})
                result.failed.append((op.src, reason))
                continue
            journal.write({"type": "undo-done", "index": i, "outcome": outcome})
            checkpoint("undo-done")
        if progress:
            progress("undo", len(todo), len(todo))
        for d in reversed(state.mkdirs):
            with contextlib.suppress(OSError):  # not empty (files it did not make, the manifest) or gone
                os.rmdir(d)
        journal.write(
            {
                "type": "undo-end",
                "created": now(),
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
    if src_there and os.path.lexists(partial_name(dst)):
        os.unlink(partial_name(dst))  # a copy cut short by the kill
    if op.op == "move":
        if dst_there and os.path.lexists(partial_name(src)):
            os.unlink(partial_name(src))  # an earlier undo's copy back, cut short
        if dst_there and not src_there:
            if not op.symlink:
                st = os.stat(dst)
                if st.st_size != op.bytes or abs(st.st_mtime - op.mtime) > MTIME_TOLERANCE:
                    raise ActionError(f"{dst} changed since it was moved there; left in place")
            makedirs(os.path.dirname(src), None, None)
            move(dst, src)
            result.restored.append(src)
            return "restored"
        if dst_there and src_there:
            if same_content(src, dst):  # cross-filesystem move stopped before unlinking the source
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
        same = sha256(dst) == expected if isinstance(expected, str) else same_content(src, dst)
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
