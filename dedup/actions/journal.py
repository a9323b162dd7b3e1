"""The manifest: an append-only, fsynced JSON-lines journal of a prune or group run (format in
:mod:`dedup.actions`), read back and folded into per-operation state; where manifests live and which one an
interrupted run resumes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dedup.actions.paths import free_name, path_text
from dedup.actions.plan import MANIFEST_VERSION, Operation, Plan
from dedup.errors import ActionError


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fsync_dir(path: str) -> None:
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


class Journal:
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
            fsync_dir(str(path.parent))

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


def fold(records: list[dict[str, Any]], manifest: Path) -> ManifestState:
    header = records[0]
    plans = [r for r in records if r["type"] == "plan"]
    if not plans or not isinstance(plans[0].get("plan"), Mapping):
        raise ActionError(f"manifest {manifest} has no plan record")
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


def new_manifest_path(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """A fresh manifest path: ``DEST/dedup-<command>-<mode>-<UTC time>.jsonl`` (``--delete``: state dir)."""
    folder = manifest_dir(plan, state_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(free_name(str(folder / f"dedup-{plan.command}-{plan.mode}-{stamp}.jsonl")))
