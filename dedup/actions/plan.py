"""Planning file actions (pure: ``stat()`` and reading file headers, never a write): what ``prune`` and
``group`` would do with a :class:`~dedup.report.Report`, as a printable, JSON-serialisable :class:`Plan`.

A report is trusted with *which* images form a group and which one is kept -- never with *where* files may
be acted on: every file must be an image the scan would have found (a regular file whose content is an
image, under a scanned folder that is not a system folder, see :func:`~dedup.actions.paths.check_roots`),
with the size and modification time the report gives still on disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dedup.actions.paths import (
    ESCAPE_REASON,
    absolute,
    check_dest,
    check_roots,
    escapes,
    free_name,
    path_text,
    root_of,
    within,
)
from dedup.errors import ActionError
from dedup.images import image_problem
from dedup.keep import check_policy, choose_keep, in_reference
from dedup.report.schema import Report, ReportImage, ReportMember, cluster_folders

#: Version of the plan record and of the manifest that journals it (dedup.actions.journal).
MANIFEST_VERSION = 1
GROUP_MODES = ("copy", "move", "link")
#: Modification times are compared with this tolerance in seconds (JSON round trips, coarse filesystems).
MTIME_TOLERANCE = 1e-3


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
                src=path_text(d["src"]),
                dst=None if d.get("dst") is None else path_text(d["dst"]),
                bytes=int(d["bytes"]),
                mtime=float(d["mtime"]),
                group=None if d.get("group") is None else int(d["group"]),
                keep=None if d.get("keep") is None else path_text(d["keep"]),
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
        done_before: files of the report that an earlier, finished run of the same command already moved
            or deleted (see :func:`~dedup.actions.journal.settle_earlier`); not a failure.
    """

    command: str
    mode: str
    roots: list[str]
    dest: str | None
    operations: list[Operation] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done_before: list[SkippedItem] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Bytes leaving the scanned folders (prune only; symbolic links free nothing)."""
        return bytes_freed(self.command, self.operations)

    def summary(self) -> dict[str, int]:
        counts = {k: 0 for k in ("move", "copy", "link", "delete")}
        for op in self.operations:
            counts[op.op] += 1
        return {
            "operations": len(self.operations),
            **counts,
            "kept": len(self.kept),
            "skipped": len(self.skipped),
            "done_before": len(self.done_before),
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
            "done_before": [s.to_dict() for s in self.done_before],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        try:
            return cls(
                command=str(d["command"]),
                mode=str(d["mode"]),
                roots=[path_text(r) for r in d["roots"]],
                dest=None if d.get("dest") is None else path_text(d["dest"]),
                operations=[Operation.from_dict(o) for o in d.get("operations", [])],
                skipped=[
                    SkippedItem(path_text(s["path"]), str(s["reason"]), s.get("group"))
                    for s in d.get("skipped", [])
                ],
                kept=[path_text(k) for k in d.get("kept", [])],
                notes=[str(n) for n in d.get("notes", [])],
                done_before=[
                    SkippedItem(path_text(s["path"]), str(s["reason"]), s.get("group"))
                    for s in d.get("done_before", [])
                ],
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ActionError(f"malformed plan: {e}") from e


def bytes_freed(command: str, ops: Iterable[Operation]) -> int:
    if command != "prune":
        return 0
    return sum(op.bytes for op in ops if op.op in ("move", "delete") and not op.symlink)


# ------------------------------------------------------------------------------------------ planning


OUTSIDE_REASON = "outside the scanned folders"
MISSING_REASON = "missing (moved or deleted since the report)"
NO_FACTS_REASON = "the report does not give its size and modification time (bytes, mtime); left alone"


def _report_roots(report: Report) -> list[str]:
    """The report's scanned folders, which every file acted on must lie under.

    Raises:
        ActionError: no ``paths``, or one is the filesystem root or a system folder.
    """
    if not report.paths:
        raise ActionError("the report has no 'paths' (the scanned folders); cannot plan file operations")
    return check_roots(report.paths, "the report")


def _report_groups(report: Report) -> list[tuple[int, str, list[ReportMember]]]:
    """``(id, keep, members)`` of every group, members de-duplicated by path, paths normalised."""
    out = []
    for g in report.groups:
        seen: dict[str, ReportMember] = {}
        for m in g.members:
            p = absolute(m.path)
            seen.setdefault(p, replace(m, path=p))
        out.append((g.id, absolute(g.keep), list(seen.values())))
    return out


class _Facts(Protocol):
    """What planning compares with the disk: a report member or image entry."""

    @property
    def path(self) -> str: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def mtime(self) -> float | None: ...


class _Disk:
    """Memoised ``stat`` facts for planning."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = roots
        self._cache: dict[str, tuple[os.stat_result | None, os.stat_result | None, str | None]] = {}

    def get(self, path: str) -> tuple[os.stat_result | None, os.stat_result | None, str | None]:
        """``(lstat, stat, problem)``; ``problem`` is a reason when the file cannot be used."""
        if path not in self._cache:
            self._cache[path] = self._look(path)
        return self._cache[path]

    def _look(self, path: str) -> tuple[os.stat_result | None, os.stat_result | None, str | None]:
        if root_of(path, self.roots) is None:
            return None, None, OUTSIDE_REASON
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None, None, MISSING_REASON
        except OSError as e:
            return None, None, f"cannot stat: {e.strerror or e}"
        try:
            st = os.stat(path)
        except OSError:
            return lst, None, "broken symbolic link"
        if not stat.S_ISREG(st.st_mode):
            return lst, st, "not a regular file"
        problem = image_problem(path)  # what discovery would have said of it
        return lst, st, None if problem is None else f"not an image the scan would use: {problem}"

    def problem(self, member: _Facts) -> str | None:
        """Why ``member`` cannot be acted on, comparing the disk with the report; ``None`` when fine:
        inside a scanned folder, an image file, with the report's size and modification time."""
        _, st, problem = self.get(member.path)
        if problem or st is None:
            return problem
        size, mtime = member.bytes, member.mtime
        if size is None or mtime is None:
            return NO_FACTS_REASON
        if st.st_size != size:
            return f"changed since the report (size {size} -> {st.st_size} bytes)"
        if abs(st.st_mtime - mtime) > MTIME_TOLERANCE:
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
    report: Report,
    *,
    to: str | os.PathLike[str] | None,
    delete: bool = False,
    keep_policy: str | None = None,
    reference: Sequence[str] = (),
) -> Plan:
    """Plan moving (``to``) or deleting (``delete``) every non-kept member of every group.

    Quarantined files mirror their path relative to the scanned root holding them
    (``/data/a/x.jpg`` scanned as ``/data`` -> ``QUARANTINE/a/x.jpg``); an existing destination gets
    ``" (1)"``, ``" (2)"``... before its extension.

    Safety rules applied here:

    - The kept image of a group is never planned for removal, nor is any member that is the same file
      (same inode: hard link, symbolic link to it, or the kept path listed again under another spelling),
      nor any group's kept image listed as a member of another group.
    - If the kept image is missing, not an image file under the scanned roots, or changed since the report
      (or the report does not give its size and modification time), the whole group is left alone
      (skipped): removing its other members could lose the only good copy.
    - A member missing, not an image file, changed (size or mtime differ from the report, or are not
      given) or outside the scanned roots is skipped with its reason.
    - The scanned roots are the report's ``paths``; the filesystem root and system folders are refused.
    - An image under a reference folder (``reference``, plus the report's own :attr:`Report.reference`)
      is never planned for removal: it is kept like the kept image (listed in ``kept``), and a re-chosen
      kept image is a reference image whenever the group has one.

    Args:
        report: the scan report; uses ``paths`` and ``groups``.
        to: quarantine folder; must not be, or contain, a scanned root. ``None`` with ``delete=True``.
        delete: delete instead of moving (irreversible).
        keep_policy: re-choose the kept image with this policy when it differs from the report's; ``None``
            keeps the report's choice (including a hand-edited ``keep``).
        reference: folders whose images are never removed (besides the report's own).

    Returns:
        The :class:`Plan`; nothing on disk is modified.

    Raises:
        ActionError: both or neither of ``to`` / ``delete``, bad destination, malformed report, a scanned
            root that is a system folder.
        ConfigError: unknown ``keep_policy``.
    """
    if delete == (to is not None):
        raise ActionError("give exactly one of a quarantine folder (--to) or --delete")
    if keep_policy is not None:
        check_policy(keep_policy)
    roots = _report_roots(report)
    dest = None if to is None else check_dest(to, roots)
    rechoose = keep_policy is not None and keep_policy != report.keep_policy
    groups = _report_groups(report)
    disk = _Disk(roots)
    plan = Plan("prune", "delete" if delete else "move", roots, dest)
    folders = tuple(dict.fromkeys([*report.reference, *(absolute(r) for r in reference)]))

    # Pass 1: the kept image of each group, and whether the group can be acted on at all.
    chosen: dict[int, str] = {}
    usable_group: dict[int, bool] = {}
    for gid, keep, members in groups:
        if rechoose and keep_policy is not None:
            usable = [m for m in members if disk.problem(m) is None]
            keep = usable[_choose(usable, keep_policy, folders)].path if usable else keep
        listed = next((m for m in members if m.path == keep), None)
        problem = disk.problem(listed) if listed is not None else "not one of the group's members"
        chosen[gid], usable_group[gid] = keep, problem is None
        if problem:
            for m in members:
                if m.path != keep:
                    plan.skipped.append(
                        SkippedItem(m.path, f"group left alone: its kept image {keep} is {problem}", gid)
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
        for m in sorted(members, key=lambda m: m.path):
            path = m.path
            if path == keep_ok:
                continue
            if in_reference(path, folders):
                if path not in plan.kept:
                    plan.kept.append(path)
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
            root = root_of(path, roots)
            if root is None or escapes(path, roots):
                reason = OUTSIDE_REASON if root is None else ESCAPE_REASON
                plan.skipped.append(SkippedItem(path, reason, gid))
                continue
            dst = None
            if dest is not None:
                if within(path, dest):
                    plan.skipped.append(SkippedItem(path, "already inside the quarantine folder", gid))
                    continue
                dst = free_name(os.path.join(dest, os.path.relpath(path, root)), taken)
                taken.add(dst)
            planned[path] = gid
            plan.operations.append(disk.operation(plan.mode, path, dst, gid, keep_ok))
    return plan


def plan_group(
    report: Report,
    *,
    to: str | os.PathLike[str],
    mode: str = "copy",
    only_duplicates: bool = False,
    reference: Sequence[str] = (),
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
        report: the scan report.
        to: output folder; must not be, or contain, a scanned root.
        mode: ``copy`` (default), ``move``, or ``link`` (symbolic links to the originals).
        only_duplicates: leave images in no group alone (no ``unique/``).
        reference: folders whose images are never moved (besides the report's own
            :attr:`Report.reference`): with ``mode="move"`` they stay where they are (a note says how
            many); copies and links of them are made as usual.

    Every file must pass the checks of :func:`plan_prune` (an image under the scanned roots, with the
    report's size and modification time); the others are skipped with their reason.

    Raises:
        ActionError: bad mode or destination, malformed report, a scanned root that is a system folder.
    """
    if mode not in GROUP_MODES:
        raise ActionError(f"group mode {mode!r} is not allowed; allowed values: {', '.join(GROUP_MODES)}")
    roots = _report_roots(report)
    dest = check_dest(to, roots)
    groups = sorted(_report_groups(report), key=lambda g: (-len(g[2]), g[0]))
    disk = _Disk(roots)
    plan = Plan("group", mode, roots, dest)
    taken: set[str] = set()
    placed: dict[str, int] = {}
    reference_dirs = tuple(dict.fromkeys([*report.reference, *(absolute(r) for r in reference)]))
    stayed: list[str] = []

    def add(member: _Facts, dst: str, gid: int | None) -> None:
        path = member.path
        if path in placed:
            plan.notes.append(f"{path} is listed in group {placed[path]} and again; placed once")
            return
        if mode == "move" and in_reference(path, reference_dirs):
            if path not in stayed:
                stayed.append(path)
            return
        problem = disk.problem(member)
        if problem is None and within(path, dest):
            problem = "already inside the output folder"
        if problem is None and mode == "move" and escapes(path, roots):
            problem = ESCAPE_REASON
        if problem:
            plan.skipped.append(SkippedItem(path, problem, gid))
            return
        dst = free_name(dst, taken)
        taken.add(dst)
        placed[path] = gid if gid is not None else 0
        plan.operations.append(disk.operation(mode, path, dst, gid, None))

    if report.clusters is not None:  # a whole-collection clustering: every image in a cluster folder
        facts = {absolute(im.path): im for im in report.images or ()}
        folders, notes = cluster_folders(report.clusters)
        plan.notes.extend(notes)
        if only_duplicates:
            plan.notes.append("--only-duplicates has no effect on clusters: every image is in one")
        for cluster, folder in zip(report.clusters, folders, strict=True):
            for p in sorted({absolute(m.path) for m in cluster.members}):
                image = facts.get(p)
                item = ReportImage(p) if image is None else replace(image, path=p)
                add(item, os.path.join(dest, folder, os.path.basename(p)), cluster.id)
        _note_stayed(plan, stayed)
        return plan

    width = max(4, len(str(len(groups))))
    for number, (gid, keep, members) in enumerate(groups, start=1):
        folder = os.path.join(dest, f"group-{number:0{width}d}")
        plan.kept.append(keep)
        for m in sorted(members, key=lambda m: (m.path != keep, m.path)):
            add(m, os.path.join(folder, os.path.basename(m.path)), gid)

    if not only_duplicates:
        if report.images is None:
            plan.notes.append(
                "the report has no 'images' list (made by an older dedup): unique/ is left empty; "
                "re-run the scan to include images in no group"
            )
        else:
            grouped = {m.path for _, _, members in groups for m in members}
            others: dict[str, ReportImage] = {}
            for im in report.images:
                p = absolute(im.path)
                if p not in grouped:
                    others.setdefault(p, replace(im, path=p))
            for p, im in sorted(others.items()):
                root = root_of(p, roots)
                if root is None:
                    plan.skipped.append(SkippedItem(p, OUTSIDE_REASON, None))
                    continue
                add(im, os.path.join(dest, "unique", os.path.relpath(p, root)), None)
    _note_stayed(plan, stayed)
    return plan


def _note_stayed(plan: Plan, stayed: Sequence[str]) -> None:
    if stayed:
        plan.notes.append(
            f"{len(stayed)} images in reference folders stay where they are (never moved), e.g. {stayed[0]}"
        )


def _choose(members: Sequence[ReportMember], policy: str, reference: Sequence[str] = ()) -> int:
    """:func:`dedup.keep.choose_keep` over report members, which must carry bytes, width and height."""
    lacking = [m.path for m in members if m.bytes is None or m.width is None or m.height is None]
    if lacking:
        raise ActionError(
            f"report member {lacking[0]} lacks bytes/width/height; cannot choose the kept image"
        )
    return choose_keep([KeptView(m) for m in members], policy, reference)


class KeptView:
    """A report member seen through :class:`dedup.keep.HasImageFacts` (missing mtime counts as 0; the
    :mod:`dedup.facts` fields as the report has them)."""

    def __init__(self, m: ReportMember) -> None:
        self.path, self.size, self.mtime = m.path, m.bytes or 0, m.mtime or 0.0
        self.width, self.height = m.width or 0, m.height or 0
        self.quality, self.lossless, self.derived, self.grayscale = (
            m.quality,
            m.lossless,
            m.derived,
            m.grayscale,
        )
        self.recompressed = m.recompressed
