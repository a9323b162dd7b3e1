"""Act on duplicate groups without ever losing a file: plan (pure), apply (journaled), undo.

Modules: :mod:`~dedup.actions.paths` (path rules), :mod:`~dedup.actions.plan` (value types, planning),
:mod:`~dedup.actions.layout` (names.yaml, clusters.csv, report files beside the placed images),
:mod:`~dedup.actions.journal` (the manifest), :mod:`~dedup.actions.fileops` (durable file primitives),
:mod:`~dedup.actions.apply`, :mod:`~dedup.actions.undo`.

Three steps, each an explicit value:

1. :func:`plan_prune` / :func:`plan_group` turn a :class:`~dedup.report.Report`
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
  "irreversible": bool, "created_dirs": [...]}``. Undo does not take ``roots`` on trust: the output folder
  is the folder the manifest lies in, the scanned roots are the plan's (see :mod:`~dedup.actions.undo`).
- ``{"type": "plan", "plan": Plan.to_dict()}`` and, when a resumed run found new work, ``{"type":
  "plan-extend", "operations": [...]}``.
- ``{"type": "mkdir", "path"}`` before creating a folder; ``{"type": "intent", "index", "op", "src",
  "dst"}`` before an operation; ``{"type": "done", "index", "dst", "sha256"?, "inode"?}`` after it (the
  sha256 of a copied file, the ``[device, inode]`` of a copy);
  ``{"type": "failed", "index", "reason"}``; ``{"type": "resume", "created"}``; ``{"type": "end", ...}``.
- Undo appends ``undo-start``, ``undo-intent`` / ``undo-done`` / ``undo-failed`` (with ``index``) and
  ``undo-end``.

Paths that are not valid UTF-8 are written as ``\\udcXX`` escapes (:func:`dedup.report.files.json_text`),
which read back as the very names. A line that is not JSON (a record cut short by a kill or a full disk)
is skipped. An apply or undo holds an exclusive lock on the folder of its manifest for its whole run
(:func:`run_lock`); a second run into the same folder stops with "another dedup run is in progress".

``prune --delete`` has no output folder: its manifest goes to :func:`default_state_dir` and is marked
``"irreversible": true``; deleted files cannot be restored by :func:`undo`, which says so.
"""

from __future__ import annotations

from dedup.actions.apply import ApplyResult, Failure, apply
from dedup.actions.journal import (
    default_state_dir,
    find_resumable,
    manifest_dir,
    new_manifest_path,
    read_manifest,
    run_lock,
    settle_earlier,
)
from dedup.actions.layout import (
    CLUSTERS_FILE,
    NAMES_FILE,
    check_group_reports,
    check_plan_reports,
    load_names,
    names_yaml,
    with_names,
    write_cluster_files,
    write_names,
)
from dedup.actions.paths import check_roots, check_writable, output_exclusions
from dedup.actions.plan import (
    GROUP_MODES,
    MANIFEST_VERSION,
    Operation,
    Plan,
    SkippedItem,
    plan_group,
    plan_prune,
)
from dedup.actions.undo import UndoResult, undo
from dedup.errors import ActionError

__all__ = [
    "CLUSTERS_FILE",
    "GROUP_MODES",
    "MANIFEST_VERSION",
    "NAMES_FILE",
    "ActionError",
    "ApplyResult",
    "Failure",
    "Operation",
    "Plan",
    "SkippedItem",
    "UndoResult",
    "apply",
    "check_group_reports",
    "check_plan_reports",
    "check_roots",
    "check_writable",
    "default_state_dir",
    "find_resumable",
    "load_names",
    "manifest_dir",
    "names_yaml",
    "new_manifest_path",
    "output_exclusions",
    "plan_group",
    "plan_prune",
    "read_manifest",
    "run_lock",
    "settle_earlier",
    "undo",
    "with_names",
    "write_cluster_files",
    "write_names",
]
