"""Reversing a prune or group run from its manifest: moved files back byte-identical, copies and links removed
only while they are what the run made; the manifest is checked before anything is touched.

A manifest is a file anyone who can write the output folder can edit, so undo trusts it only with what it
can check independently (see :func:`_validated`): the output folder is the folder the manifest lies in
(never the folders its header names), every destination must lie inside it, every source under one of the
scanned folders recorded at plan time (consistently in the header and the plan; never the filesystem root
or a system folder) and carry the name its destination was given from it. Undo puts back only regular
files (or the links the run moved) that still have the recorded size, modification time and hash, never
over an existing file, and removes only copies that still have the original's bytes and the inode the run
gave them, and links that still point where the run made them point.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup.actions.fileops import checkpoint, describe, makedirs, move, same_content, sha256
from dedup.actions.journal import (
    Journal,
    JournalError,
    ManifestState,
    NoPlanError,
    fold,
    now,
    read_manifest,
    run_lock,
)
from dedup.actions.paths import absolute, escapes, partial_name, root_of, same_name, system_folder, within
from dedup.actions.plan import MTIME_TOLERANCE, Operation
from dedup.errors import ActionError

ProgressFn = Callable[[str, int, "int | None"], None]

#: (command, mode) of the runs a manifest can record, and the operation each of them journals.
_RUNS = {
    ("prune", "move"): "move",
    ("prune", "delete"): "delete",
    ("group", "copy"): "copy",
    ("group", "move"): "move",
    ("group", "link"): "link",
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
        notes: remarks for the user (a run stopped before it began; undo could not journal itself).
    """

    manifest: Path
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    unrestorable: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.unrestorable


def _refuse(manifest: Path, why: str) -> ActionError:
    return ActionError(f"manifest {manifest} {why}; refusing to undo anything")


def _clean(p: Any, manifest: Path) -> str:
    """``p`` if it is a clean absolute path (absolute, normalised, no NUL), else refuse the manifest."""
    if not isinstance(p, str) or "\0" in p or not os.path.isabs(p) or os.path.normpath(p) != p:
        raise _refuse(manifest, f"refers to {p!r}, which is not a clean absolute path")
    return p


def _check_roots(roots: Any, manifest: Path) -> list[str]:
    """The scanned folders recorded by the header: clean absolute paths, none of them the filesystem root or
    a system folder (a prune never runs there, so a manifest naming one was not written by dedup)."""
    if not isinstance(roots, list) or not roots:
        raise _refuse(manifest, "records no scanned folders")
    out = []
    for r in roots:
        if not isinstance(r, str) or "\0" in r or not os.path.isabs(r) or os.path.normpath(r) != r:
            raise _refuse(manifest, f"records an invalid folder {r!r}")
        why = system_folder(r)
        if why:
            raise _refuse(manifest, f"records the folder {r}, which is {why}")
        out.append(r)
    return out


def _inside(p: str, folder: str, manifest: Path, what: str) -> None:
    """Refuse ``p`` unless it lies strictly inside ``folder``, also with symbolic links resolved."""
    real_parent = os.path.realpath(os.path.dirname(p))
    if p == folder or not within(p, folder) or not within(real_parent, os.path.realpath(folder)):
        raise _refuse(manifest, f"refers to {p} as {what}, which is not inside {folder}")


def _source(p: str, roots: Sequence[str], dest: str | None, manifest: Path, *, real: bool) -> str:
    """Refuse a source outside every scanned root (with ``real``: also once symbolic links are resolved),
    or inside the output folder; return the scanned root holding it."""
    root = root_of(p, roots)
    if root is None or p == root:
        raise _refuse(
            manifest, f"refers to {p}, outside the scanned folders it recorded ({', '.join(roots)})"
        )
    if real and escapes(p, roots):
        raise _refuse(
            manifest, f"refers to {p}, which leads outside the scanned folders through a symbolic link"
        )
    if dest is not None and within(p, dest):
        raise _refuse(manifest, f"refers to {p} as a source inside its output folder {dest}")
    return root


def _check_pair(command: str, src: str, dst: str, root: str, dest: str, manifest: Path) -> None:
    """A destination must be what the run derived from its source: the same file name (or its ``" (n)"``
    variant), and for prune the same path below the quarantine as below the scanned root."""
    if not same_name(os.path.basename(dst), os.path.basename(src)):
        raise _refuse(manifest, f"pairs {src} with {dst}, a name the run cannot have given it")
    if command == "prune" and os.path.dirname(os.path.relpath(dst, dest)) != os.path.dirname(
        os.path.relpath(src, root)
    ):
        raise _refuse(manifest, f"pairs {src} with {dst}, which does not mirror its path")


def _validated(manifest: Path) -> ManifestState | None:
    """The manifest's state once everything it refers to is justified by facts undo can check itself;
    None for a run stopped before its plan record (it changed nothing).

    - The output folder is the folder holding the manifest; the header's ``dest`` must be it (``None``
      only for ``prune --delete``, whose manifest lives in the state folder and whose undo touches nothing).
    - The scanned roots are the plan's ``roots``, which the header's ``scanned_roots`` must repeat; the
      header's ``roots`` (scanned roots + output folder) is checked against them, never used. None is the
      filesystem root or a system folder.
    - Every operation is of the run's kind; its source lies under a scanned root (and, for a move, really:
      no symbolic-link escape) and not in the output folder; its destination -- planned, journaled in the
      intent or in the done record, and every folder the run created -- lies inside the output folder (also
      with links resolved) and carries the source's name (prune: its mirrored path).

    Raises:
        ActionError: anything else (nothing is touched then).
    """
    records = read_manifest(manifest)
    try:
        state = fold(records, manifest)
    except NoPlanError:
        if any(r["type"] in ("intent", "done", "mkdir", "plan-extend") for r in records[1:]):
            raise _refuse(manifest, "records operations but no plan") from None
        return None
    h, plan = state.header, state.plan
    command, mode = str(h.get("command")), str(h.get("mode"))
    kind = _RUNS.get((command, mode))
    if kind is None or (plan.command, plan.mode) != (command, mode):
        raise _refuse(manifest, "has an inconsistent header")
    folder = os.path.dirname(absolute(manifest))
    dest = h.get("dest")
    if mode == "delete":
        if dest is not None or plan.dest is not None:
            raise _refuse(manifest, "has an inconsistent header")
    else:
        dest = _clean(dest, manifest)
        if plan.dest != dest or os.path.realpath(dest) != os.path.realpath(folder):
            raise _refuse(manifest, f"is not inside the folder it records ({dest})")
        why = system_folder(dest)
        if why:
            raise _refuse(manifest, f"records the output folder {dest}, which is {why}")
    scanned = _check_roots(h.get("scanned_roots"), manifest)
    if scanned != plan.roots:
        raise _refuse(manifest, "has an inconsistent header")
    if "roots" in h and h["roots"] != scanned + ([dest] if dest is not None else []):
        raise _refuse(manifest, "records folders in its header that its plan does not justify")
    for op in state.operations:
        if op.op != kind:
            raise _refuse(manifest, f"records a {op.op!r} operation in a {command} --{mode} run")
        root = _source(_clean(op.src, manifest), scanned, dest, manifest, real=op.op == "move")
        if op.keep is not None:
            _clean(op.keep, manifest)
        if op.dst is not None and dest is not None:
            _inside(_clean(op.dst, manifest), dest, manifest, "a destination")
            _check_pair(command, op.src, op.dst, root, dest, manifest)
    for r in records[1:]:
        i = r.get("index")
        op_i = state.operations[i] if r["type"] in ("intent", "done") and isinstance(i, int) else None
        if op_i is not None and r["type"] == "intent" and r.get("src") != op_i.src:
            raise _refuse(manifest, f"has an intent {i} that does not match its planned operation")
        for key in ("dst", "path"):
            p = r.get(key)
            if p is None:
                continue
            if dest is None:
                raise _refuse(manifest, f"refers to {p!r} in a run that has no output folder")
            _inside(_clean(p, manifest), dest, manifest, "a destination")
            if op_i is not None:
                _check_pair(command, op_i.src, p, root_of(op_i.src, scanned) or "", dest, manifest)
    return state


def undo(manifest: str | os.PathLike[str], progress: ProgressFn | None = None) -> UndoResult:
    """Reverse what the run journaled in ``manifest`` did; safe to run again, and after a kill.

    Moved files go back to their original path (byte-identical; never over an existing file; only a
    regular file with the recorded size, modification time and -- across filesystems -- sha256, or the
    symbolic link the run moved), copies the run made are removed only while they are the very file it
    made (same inode) and still hold the original's bytes, links only while they point where it made them
    point, folders it created only when empty. Operations interrupted between ``intent`` and ``done`` are
    settled by looking at the disk. Undo holds the output folder's lock and journals itself into the same
    manifest (``undo-*`` records); if that cannot be written (disk full), it goes on unjournaled, which is
    safe (each step is decided by looking at the disk) and says so in ``notes``.

    Files deleted by ``prune --delete`` cannot be restored: they are listed in ``unrestorable``. A run
    stopped before its plan record changed nothing: there is nothing to undo (a note says so).

    Args:
        manifest: the manifest printed by ``prune`` / ``group``.
        progress: optional callback ``(phase, done, total)`` with phase ``"undo"``.

    Raises:
        ActionError: unreadable or malformed manifest, one that refers to paths its own facts do not
            justify (see :func:`_validated`), or another run holds the folder's lock. Nothing is touched in
            that case.
    """
    path = Path(absolute(manifest))
    if not path.is_file():
        raise ActionError(f"manifest {path} does not exist" if not path.exists() else f"{path} is not a file")
    with run_lock(path.parent):
        state = _validated(path)
        result = UndoResult(path)
        if state is None:
            result.notes.append(
                f"the run recorded in {path} was stopped before it changed anything; nothing to undo"
            )
            return result
        _undo_all(state, path, result, progress)
    return result


class _UndoJournal:
    """Undo's records in the manifest, or nothing once they cannot be written (undo goes on)."""

    def __init__(self, path: Path, result: UndoResult) -> None:
        self.result = result
        self.journal: Journal | None
        try:
            self.journal = Journal(path)
        except ActionError as e:
            self.journal = None
            self._note(e)

    def _note(self, e: ActionError) -> None:
        self.result.notes.append(
            f"{e}; undo went on without journaling itself (safe: run it again if it is interrupted)"
        )

    def write(self, record: Mapping[str, Any]) -> None:
        if self.journal is None:
            return
        try:
            self.journal.write(record)
        except JournalError as e:
            self.journal.close()
            self.journal = None
            self._note(e)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


def _undo_all(state: ManifestState, path: Path, result: UndoResult, progress: ProgressFn | None) -> None:
    todo = sorted(state.intents, reverse=True)
    result.unchanged += len(state.operations) - len(todo)
    journal = _UndoJournal(path, result)
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
            _check_moved(op, dst, done)
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
        _check_copy(src, dst, done)
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


def _check_moved(op: Operation, dst: str, done: Mapping[str, Any] | None) -> None:
    """Refuse to put ``dst`` back unless it is what the run moved there: the symbolic link it moved, or a
    regular file (not a link swapped in) with the recorded size, modification time and sha256."""
    st = os.lstat(dst)
    if op.symlink:
        if not stat.S_ISLNK(st.st_mode):
            raise ActionError(f"{dst} is no longer the symbolic link dedup moved there; left in place")
        return
    if stat.S_ISLNK(st.st_mode):
        raise ActionError(f"{dst} was replaced by a symbolic link since it was moved there; left in place")
    if not stat.S_ISREG(st.st_mode):
        raise ActionError(f"{dst} is no longer a regular file; left in place")
    if st.st_size != op.bytes or abs(st.st_mtime - op.mtime) > MTIME_TOLERANCE:
        raise ActionError(f"{dst} changed since it was moved there; left in place")
    expected = done.get("sha256") if done else None
    if isinstance(expected, str) and sha256(dst) != expected:
        raise ActionError(f"{dst} changed since it was moved there; left in place")


def _check_copy(src: str, dst: str, done: Mapping[str, Any] | None) -> None:
    """Refuse to remove ``dst`` unless removing it loses nothing: it is the very file the run made (a
    regular file with the inode and sha256 it recorded) and the original still holds the same bytes."""
    st = os.lstat(dst)
    if not stat.S_ISREG(st.st_mode):
        raise ActionError(f"{dst} is not the copy dedup made (not a regular file); left in place")
    inode = done.get("inode") if done else None
    if isinstance(inode, list) and inode != [st.st_dev, st.st_ino]:
        raise ActionError(f"{dst} is not the file dedup made there; left in place")
    if not os.path.lexists(src):
        raise ActionError(f"the original {src} is gone, so its copy {dst} is the only one; left in place")
    digest = sha256(dst)
    expected = done.get("sha256") if done else None
    if isinstance(expected, str) and digest != expected:
        raise ActionError(f"{dst} was modified after dedup copied it; left in place")
    if digest != sha256(src):
        raise ActionError(f"{dst} no longer has the bytes of the original {src}; left in place")
