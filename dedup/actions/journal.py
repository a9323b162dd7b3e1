"""The manifest: an append-only, fsynced JSON-lines journal of a prune or group run (format in
:mod:`dedup.actions`), read back and folded into per-operation state; where manifests live, which one an
interrupted run resumes, and the lock that keeps two runs out of one folder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dedup.actions.paths import free_name, path_text
from dedup.actions.plan import MANIFEST_VERSION, MISSING_REASON, Operation, Plan, SkippedItem
from dedup.errors import ActionError
from dedup.report.files import fsync_folder
from dedup.report.wording import json_text

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

#: errno values meaning "the destination's filesystem cannot take more" (the run stops at once).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Journal:
    """Append-only JSON-lines file; every record is written whole, unbuffered, and fsynced before ``write``
    returns, so a failed write (disk full) leaves at most one cut line, which readers skip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        try:
            self._f = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            if not new and path.stat().st_size:
                with open(path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":  # a record cut short by a kill: start on a fresh line
                        self._write(b"\n")
        except OSError as e:
            raise ActionError(f"cannot write manifest {path}: {e.strerror or e}") from e
        if new:
            fsync_folder(path.parent)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            view = view[n or 0 :]

    def write(self, record: Mapping[str, Any]) -> None:
        line = json_text(record, separators=(",", ":")) + "\n"
        try:
            self._write(line.encode("utf-8"))
            os.fsync(self._f.fileno())
        except OSError as e:
            raise JournalError(f"cannot write manifest {self.path}: {e.strerror or e}", e.errno) from e

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


class JournalError(ActionError):
    """A manifest record could not be written (``errno`` says why, e.g. ``ENOSPC``)."""

    def __init__(self, message: str, errno_: int | None) -> None:
        super().__init__(message)
        self.errno = errno_


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a manifest. A line that is not JSON -- a record cut short by a kill or by a full
    disk -- is skipped: its operation either had not started (an intent is written first) or is settled
    by looking at the disk (a missing ``done``).

    Raises:
        ActionError: missing or unreadable file, a line that is JSON but not a record, or no version-1
            header.
    """
    p = Path(path)
    try:
        lines = p.read_bytes().split(b"\n")
    except FileNotFoundError as e:
        raise ActionError(f"manifest {p} does not exist") from e
    except OSError as e:
        raise ActionError(f"cannot read manifest {p}: {e.strerror or e}") from e
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise ActionError(f"manifest {p} line {i + 1} is not a manifest record")
        records.append(rec)
    if not records or records[0].get("type") != "header" or records[0].get("version") != MANIFEST_VERSION:
        raise ActionError(f"{p} is not a dedup manifest (version {MANIFEST_VERSION})")
    return records


@dataclass
class ManifestState:
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


class NoPlanError(ActionError):
    """The manifest has a header but no plan: its run was stopped before it did anything."""


def fold(records: list[dict[str, Any]], manifest: Path) -> ManifestState:
    """Fold a manifest's records into per-operation state.

    Raises:
        NoPlanError: no plan record (the run was stopped before it changed anything).
        ActionError: a malformed plan, or a record that names no planned operation.
    """
    header = records[0]
    plans = [r for r in records if r["type"] == "plan"]
    if not plans:
        raise NoPlanError(f"manifest {manifest} has no plan record: its run was stopped before it began")
    if not isinstance(plans[0].get("plan"), Mapping):
        raise ActionError(f"manifest {manifest} has no valid plan record")
    plan = Plan.from_dict(plans[0]["plan"])
    state = ManifestState(header, plan, list(plan.operations))
    for r in records[1:]:
        kind = r["type"]
        idx = r.get("index")
        if kind == "plan-extend":
            state.operations.extend(Operation.from_dict(o) for o in r.get("operations", []))
        elif kind == "mkdir":
            state.mkdirs.append(path_text(r.get("path")))
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


def run_key(command: str, mode: str, roots: Sequence[str], dest: str | None) -> tuple[Any, ...]:
    return (command, mode, tuple(roots), dest)


def default_state_dir() -> Path:
    """Where ``prune --delete`` keeps its manifests: ``$XDG_STATE_HOME/dedup`` (``~/.local/state/dedup``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "dedup"


def manifest_dir(plan: Plan, state_dir: str | os.PathLike[str] | None) -> Path:
    if plan.dest is not None:
        return Path(plan.dest)
    return Path(state_dir) if state_dir is not None else default_state_dir()


def find_resumable(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The manifest of an interrupted run of the same command (same mode, roots and destination), if any.

    Applying ``plan`` to it completes that run instead of starting a new one (nothing is done twice).
    Manifests that finished, or that were (partly) undone, are never resumed.
    """
    folder = manifest_dir(plan, state_dir)
    if not folder.is_dir():
        return None
    key = run_key(plan.command, plan.mode, plan.roots, plan.dest)
    for path in sorted(folder.glob(f"dedup-{plan.command}-*.jsonl"), key=lambda p: p.name, reverse=True):
        try:
            state = fold(read_manifest(path), path)
        except ActionError:
            continue
        h = state.header
        if state.ended or state.undone:
            continue
        if run_key(h.get("command", ""), h.get("mode", ""), h.get("scanned_roots", []), h.get("dest")) == key:
            return path
    return None


def settle_earlier(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> None:
    """Move the files ``plan`` skips as missing that an earlier run of the same command already acted on
    from ``plan.skipped`` to ``plan.done_before``: re-running a finished prune of a report is a normal
    outcome ("nothing to do"), not a failure.

    An earlier run counts when its manifest lies in the same folder, records the same command, mode,
    scanned roots and destination, finished (``end``), was not undone, and has a ``done`` record for the
    file. (An unfinished one is resumed instead, see :func:`find_resumable`.)
    """
    missing = {s.path for s in plan.skipped if s.reason == MISSING_REASON}
    folder = manifest_dir(plan, state_dir)
    if not missing or not folder.is_dir():
        return
    key = run_key(plan.command, plan.mode, plan.roots, plan.dest)
    handled: dict[str, Path] = {}
    for path in sorted(folder.glob(f"dedup-{plan.command}-*.jsonl"), key=lambda p: p.name):
        try:
            state = fold(read_manifest(path), path)
        except ActionError:
            continue
        h = state.header
        if not state.ended or state.undone:
            continue
        if run_key(h.get("command", ""), h.get("mode", ""), h.get("scanned_roots", []), h.get("dest")) != key:
            continue
        for i in state.done:
            handled.setdefault(state.operations[i].src, path)
    still = []
    for s in plan.skipped:
        earlier = handled.get(s.path) if s.path in missing else None
        if earlier is None:
            still.append(s)
        else:
            plan.done_before.append(
                SkippedItem(s.path, f"already done by an earlier run ({earlier})", s.group)
            )
    plan.skipped = still


def new_manifest_path(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """A fresh manifest path: ``DEST/dedup-<command>-<mode>-<UTC time>.jsonl`` (``--delete``: state dir)."""
    folder = manifest_dir(plan, state_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(free_name(str(folder / f"dedup-{plan.command}-{plan.mode}-{stamp}.jsonl")))


# ------------------------------------------------------------------------------------------ locking

_held: dict[str, tuple[int, int, int]] = {}  # real folder -> (fd, owning thread, depth)
_held_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], *, create: bool = False) -> Iterator[None]:
    """Hold the lock of a run folder -- the quarantine / output folder holding the manifests, or the state
    folder of ``prune --delete`` -- for a whole apply or undo.

    An exclusive ``flock`` on the folder itself (no lock file is left behind; released by the OS when the
    process dies, also on SIGKILL). Re-entrant within one thread, so :func:`~dedup.actions.apply` may be
    called under the lock of its caller.

    Args:
        folder: the folder.
        create: create it (and missing parents) first.

    Raises:
        ActionError: another run (another process, or another thread) holds it -- "another dedup run is in
            progress" -- or the folder cannot be created.
    """
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise ActionError(f"cannot create the folder {folder}: {e.strerror or e}") from e
    key = os.path.realpath(folder)
    me = threading.get_ident()
    with _held_guard:
        held = _held.get(key)
        if held is not None and held[1] != me:
            raise ActionError(f"another dedup run is in progress in {folder}; wait for it to finish")
        if held is not None:
            _held[key] = (held[0], me, held[2] + 1)
        else:
            _held[key] = (_lock(key, folder), me, 1)
    try:
        yield
    finally:
        with _held_guard:
            fd, owner, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, owner, depth - 1)
            else:
                del _held[key]
                if fd >= 0:
                    os.close(fd)  # releases the flock


def _lock(path: str, shown: str | os.PathLike[str]) -> int:
    """An open descriptor of ``path`` holding its exclusive flock (-1 where locks are not supported)."""
    if fcntl is None:  # pragma: no cover
        return -1
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ActionError(f"cannot open the folder {shown}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ActionError(f"another dedup run is in progress in {shown}; wait for it to finish") from None
    except OSError:  # a filesystem without flock (some network mounts): run unlocked
        os.close(fd)
        return -1
    return fd
