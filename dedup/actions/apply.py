"""Performing a :class:`~dedup.actions.plan.Plan` under the write-ahead journal, and completing an interrupted
run (nothing is done twice)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup import __version__
from dedup.actions.fileops import checkpoint, copy_verified, describe, makedirs, move, same_content
from dedup.actions.journal import (
    NO_SPACE,
    Journal,
    JournalError,
    ManifestState,
    fold,
    now,
    read_manifest,
    run_key,
    run_lock,
)
from dedup.actions.paths import absolute, free_name, partial_name
from dedup.actions.plan import MANIFEST_VERSION, MTIME_TOLERANCE, Operation, Plan, SkippedItem, bytes_freed
from dedup.errors import ActionError

ProgressFn = Callable[[str, int, "int | None"], None]


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
        return bytes_freed(self.plan.command, self.done + self.already_done)

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
        ActionError: another run holds the folder's lock ("another dedup run is in progress"), the folder
            cannot be created, the manifest cannot be written or belongs to another / finished / undone
            run, or the run had to stop half-way because the destination is full or read-only (what was
            done is journaled and no partial file is left: run again to finish, or undo).
    """
    path = Path(absolute(manifest))
    try:
        created = makedirs(str(path.parent), None, None)
    except OSError as e:
        raise ActionError(f"cannot create the folder {path.parent}: {describe(e)}") from e
    with run_lock(path.parent):
        return _apply_locked(plan, path, created, progress)


def _apply_locked(plan: Plan, path: Path, created: list[str], progress: ProgressFn | None) -> ApplyResult:
    """:func:`apply` under the run folder's lock."""
    if path.exists() and path.stat().st_size:
        state = fold(read_manifest(path), path)
        h = state.header
        key = run_key(h.get("command", ""), h.get("mode", ""), h.get("scanned_roots", []), h.get("dest"))
        if state.ended or state.undone or key != run_key(plan.command, plan.mode, plan.roots, plan.dest):
            raise ActionError(
                f"manifest {path} belongs to a finished, undone or different run; use a new manifest"
            )
        journal = Journal(path)
        try:
            journal.write({"type": "resume", "created": now()})
            known = {(op.op, op.src) for op in state.operations}
            extra = [op for op in plan.operations if (op.op, op.src) not in known]
            if extra:
                journal.write({"type": "plan-extend", "operations": [op.to_dict() for op in extra]})
                state.operations.extend(extra)
        except JournalError as e:
            journal.close()
            raise ActionError(f"{e}; nothing was done (the interrupted run can be resumed later)") from e
        sources = {op.src for op in state.operations}
        result = ApplyResult(
            path, state.plan, resumed=True, skipped=[s for s in plan.skipped if s.path not in sources]
        )
        result.plan.operations = list(state.operations)
    else:
        journal = Journal(path)
        roots = list(plan.roots) + ([plan.dest] if plan.dest is not None else [])
        try:
            journal.write(
                {
                    "type": "header",
                    "version": MANIFEST_VERSION,
                    "tool": f"dedup {__version__}",
                    "command": plan.command,
                    "mode": plan.mode,
                    "created": now(),
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
        except JournalError as e:  # nothing was done: leave no half manifest behind
            journal.close()
            path.unlink(missing_ok=True)
            raise ActionError(f"{e}; nothing was done") from e
        state = ManifestState({}, plan, list(plan.operations))
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
            except JournalError as e:
                raise _stopped(result, total, path, str(e)) from e
            except OSError as e:
                if e.errno in NO_SPACE:  # every further operation would fail the same way
                    with contextlib.suppress(JournalError):
                        journal.write({"type": "failed", "index": i, "reason": describe(e)})
                    raise _stopped(
                        result, total, path, f"the destination cannot take more: {describe(e)}"
                    ) from e
                reason = describe(e)
                journal.write({"type": "failed", "index": i, "reason": reason})
                result.failed.append(Failure(op, reason))
            except ActionError as e:
                reason = describe(e)
                journal.write({"type": "failed", "index": i, "reason": reason})
                result.failed.append(Failure(op, reason))
        if progress:
            progress("apply", total, total)
        journal.write(
            {
                "type": "end",
                "created": now(),
                "done": len(result.done) + len(result.already_done),
                "failed": len(result.failed),
            }
        )
    except JournalError as e:
        raise _stopped(result, len(state.operations), path, str(e)) from e
    finally:
        journal.close()
    return result


def _stopped(result: ApplyResult, total: int, manifest: Path, reason: str) -> ActionError:
    """The error of a run stopped half-way (disk full, manifest unwritable): what was done stays done and
    journaled, no partial file is left; the same command completes it, ``dedup undo`` reverses it."""
    done = len(result.done) + len(result.already_done)
    return ActionError(
        f"stopped after {done} of {total} operations: {reason}. Free some space and run the same command "
        f"again to finish, or reverse what was done with: dedup undo {manifest}"
    )


def _with_dst(op: Operation, dst: Any) -> Operation:
    if op.dst is None or not isinstance(dst, str) or dst == op.dst:
        return op
    return Operation(op.op, op.src, dst, op.bytes, op.mtime, op.group, op.keep, op.symlink)


def _perform(op: Operation, index: int, dest: str | None, journal: Journal) -> Operation:
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
        makedirs(os.path.dirname(dst), journal, dest)
        dst = free_name(dst)  # re-checked now: something may have appeared there since planning
        if os.path.lexists(partial_name(dst)):
            os.unlink(partial_name(dst))
    journal.write({"type": "intent", "index": index, "op": op.op, "src": op.src, "dst": dst})
    checkpoint("intent")
    digest: str | None = None
    if dst is None:
        os.unlink(op.src)
    elif op.op == "move":
        digest = move(op.src, dst)
    elif op.op == "copy":
        digest = copy_verified(op.src, dst)
    else:
        os.symlink(op.src, dst)
    record: dict[str, Any] = {"type": "done", "index": index, "dst": dst}
    if digest is not None:
        record["sha256"] = digest
    if op.op == "copy" and dst is not None:  # undo removes only this very file (same inode)
        st_dst = os.lstat(dst)
        record["inode"] = [st_dst.st_dev, st_dst.st_ino]
    journal.write(record)
    checkpoint("done")
    return _with_dst(op, dst)


def _finish_interrupted(op: Operation, intent: Mapping[str, Any], journal: Journal, index: int) -> bool:
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
    if src_there and os.path.lexists(partial_name(dst)):
        os.unlink(partial_name(dst))
    finished = False
    if op.op == "move":
        if dst_there and not src_there:
            finished = True
        elif dst_there and src_there and same_content(src, dst):
            os.unlink(src)  # copied across filesystems and verified; the source was not yet removed
            finished = True
        elif dst_there:
            raise ActionError(f"{src} and {dst} both exist and differ; left both alone")
    elif op.op == "copy":
        if dst_there and src_there and same_content(src, dst):
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
