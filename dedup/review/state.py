"""The decisions of a review and the reviewed report they make, saved at once after every decision.

A review starts from a scan report (schema v1). Each group is ``pending`` until it is decided:

- ``accepted`` -- the page's "Accept" (one group, or every pending group of a page), or choosing which
  image the group keeps; only accepted groups are acted on.
- ``rejected`` -- "Reject group": not duplicates. Each member's pair with the kept image goes to the ignore
  list, so later scans never group them again.
- a member marked "not a duplicate" leaves its group (and its pair with the kept image goes to the ignore
  list); "Keep best in every group" re-chooses every kept image with the keep policy ``best``.

The **reviewed report** (``<report>.reviewed.json`` beside the report, or ``output``) is the scan report
with only the accepted groups, as decided: the chosen kept image first, the members marked "not a
duplicate" left out, groups of one image dropped, ``stats`` (groups, duplicates, reclaimable bytes)
recomputed. It is schema v1: ``dedup prune|group --from-report`` take it unchanged. Its extra ``review``
key records every decision (and the source report), so opening the same report again restores them; it
is rewritten atomically (temporary file, fsync, rename) after every decision, so a crash or a closed tab
loses nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dedup.actions.plan import KeptView
from dedup.errors import InputError, ReportError
from dedup.ignore import IgnoreList
from dedup.keep import choose_keep, in_reference
from dedup.report.files import to_json, write_text
from dedup.report.schema import Report, ReportGroup, load_report

REVIEW_KEY = "review"
REVIEW_VERSION = 1
STATUSES = ("pending", "accepted", "rejected")
#: The decisions :meth:`ReviewState.decide` takes (the page's ``data-action`` names).
ACTIONS = (
    "keep",
    "not-duplicate",
    "reject-group",
    "accept-group",
    "reset-group",
    "accept-page",
    "keep-best-all",
)


class DecisionError(InputError):
    """A decision that cannot be made (unknown group or member, the kept image marked not a duplicate...)."""


@dataclass
class GroupDecision:
    """What was decided about one group of the source report.

    Attributes:
        status: ``pending``, ``accepted`` or ``rejected``.
        keep: the kept image chosen in the review (None = the scan's).
        not_duplicate: member path -> the kept image it was marked "not a duplicate" of.
    """

    status: str = "pending"
    keep: str | None = None
    not_duplicate: dict[str, str] = field(default_factory=dict)

    @property
    def default(self) -> bool:
        return self.status == "pending" and self.keep is None and not self.not_duplicate


def default_output(report_path: str | os.PathLike[str]) -> Path:
    """Where the reviewed report of ``report_path`` goes: ``scan.json`` -> ``scan.reviewed.json``."""
    p = Path(report_path).absolute()
    return p.with_name(f"{p.stem}.reviewed.json")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ReviewState:
    """A review in progress: the source report, the decisions, and the reviewed report file.

    Use :meth:`open`; every :meth:`decide` saves the reviewed report before it returns.

    Attributes:
        source: the scan report being reviewed.
        source_path: its file.
        output: the reviewed report's file.
        ignore: the ignore list "not a duplicate" pairs go to (None: not remembered).
        reference: folders whose images are always kept (the report's own plus any given).
        decisions: group id -> :class:`GroupDecision`.
        notes: remarks from opening (decisions that no longer matched the report...).
    """

    def __init__(
        self,
        source: Report,
        source_path: Path,
        output: Path,
        *,
        ignore: IgnoreList | None,
        reference: Sequence[str] = (),
        decisions: Mapping[int, GroupDecision] | None = None,
    ) -> None:
        self.source = source
        self.source_path = source_path
        self.output = output
        self.ignore = ignore
        self.reference = tuple(dict.fromkeys([*source.reference, *reference]))
        self.groups: dict[int, ReportGroup] = {g.id: g for g in source.groups}
        self.decisions: dict[int, GroupDecision] = {gid: GroupDecision() for gid in self.groups}
        self.decisions.update(decisions or {})
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        report_path: str | os.PathLike[str],
        *,
        output: str | os.PathLike[str] | None = None,
        ignore: IgnoreList | None = None,
        reference: Sequence[str] = (),
    ) -> ReviewState:
        """Start or resume the review of a report and write its reviewed report at once.

        ``report_path`` may be a scan report or a reviewed report (whose ``review.source`` is then
        reviewed, and which is the output unless ``output`` says otherwise). Decisions already saved in
        the output are restored when they still match the source's groups (same id and kept image).

        Raises:
            ReportError: not a dedup report, or a reviewed report whose source report is gone.
            InputError: the reviewed report cannot be written.
        """
        given = Path(report_path).absolute()
        report = load_report(given)
        info = report.extra.get(REVIEW_KEY)
        if isinstance(info, Mapping) and isinstance(info.get("source"), str):
            source_path = Path(info["source"])
            if not source_path.is_file():
                raise ReportError(
                    f"{given} is a reviewed report whose source report {source_path} is gone; review a "
                    "scan report (dedup scan PATH --report scan.json, then dedup review scan.json)"
                )
            source = load_report(source_path)
            out = Path(output).absolute() if output is not None else given
        else:
            source_path, source = given, report
            out = Path(output).absolute() if output is not None else default_output(given)
        if out == source_path:
            raise InputError(f"the reviewed report must not overwrite the report it reviews ({out})")
        folder = out.parent
        if not folder.is_dir():
            raise InputError(f"cannot write the reviewed report {out}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise InputError(
                f"cannot write the reviewed report {out}: permission denied (choose another with --output)"
            )
        state = cls(source, source_path, out, ignore=ignore, reference=reference)
        state._restore(out)
        state.save()
        return state

    def _restore(self, out: Path) -> None:
        if not out.is_file():
            return
        try:
            previous = load_report(out)
        except ReportError as e:
            self.notes.append(f"the earlier reviewed report could not be read ({e}); starting afresh")
            return
        info = previous.extra.get(REVIEW_KEY)
        if not isinstance(info, Mapping) or info.get("source") != str(self.source_path):
            self.notes.append(f"{out} is not a review of {self.source_path}; it is replaced")
            return
        saved = info.get("groups")
        dropped = 0
        for key, value in (saved or {}).items() if isinstance(saved, Mapping) else ():
            decision = _parse_decision(value)
            try:
                gid = int(key)
            except ValueError:
                gid = -1
            group = self.groups.get(gid)
            if decision is None or group is None or value.get("scan_keep") != group.keep:
                dropped += 1
                continue
            paths = {m.path for m in group.members}
            decision.not_duplicate = {p: k for p, k in decision.not_duplicate.items() if p in paths}
            if decision.keep is not None and decision.keep not in paths:
                decision.keep = None
            self.decisions[gid] = decision
        if dropped:
            self.notes.append(f"{dropped} saved decisions no longer match the report's groups; left out")

    # ------------------------------------------------------------------------------------------ views

    def keep_of(self, gid: int) -> str:
        """The kept image of a group as decided (the scan's unless changed)."""
        return self.decisions[gid].keep or self.groups[gid].keep

    def members_of(self, gid: int) -> list[str]:
        """The paths still in a group (not marked "not a duplicate"), the kept image first."""
        d, group = self.decisions[gid], self.groups[gid]
        keep = self.keep_of(gid)
        rest = [m.path for m in group.members if m.path != keep and m.path not in d.not_duplicate]
        return [keep, *rest]

    def reviewed(self) -> Report:
        """The reviewed report: the accepted groups as decided (see the module docstring)."""
        groups = []
        for gid, group in self.groups.items():
            d = self.decisions[gid]
            if d.status != "accepted":
                continue
            keep = self.keep_of(gid)
            by_path = {m.path: m for m in group.members}
            members = tuple(by_path[p] for p in self.members_of(gid))
            if len(members) >= 2:
                groups.append(replace(group, keep=keep, members=members))
        freed = [m for g in groups for m in g.members if m.path != g.keep]
        stats = {
            **self.source.stats,
            "groups": len(groups),
            "duplicates": len(freed),
            "reclaimable_bytes": sum(m.bytes or 0 for m in freed),
        }
        extra = {**self.source.extra, REVIEW_KEY: self._review_info()}
        return self.source.replace(groups=tuple(groups), stats=stats, extra=extra)

    def counts(self) -> dict[str, int]:
        """Groups by status, and the files and bytes the accepted groups would move."""
        out = {s: 0 for s in STATUSES}
        for d in self.decisions.values():
            out[d.status] += 1
        report = self.reviewed()
        movable = [
            m
            for g in report.groups
            for m in g.members
            if m.path != g.keep and not in_reference(m.path, self.reference)
        ]
        out["files"] = len(movable)
        out["bytes"] = sum(m.bytes or 0 for m in movable)
        out["groups"] = len(self.groups)
        return out

    def _review_info(self) -> dict[str, Any]:
        return {
            "version": REVIEW_VERSION,
            "source": str(self.source_path),
            "source_sha256": _sha256(self.source_path),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ignore_file": None if self.ignore is None else str(self.ignore.path),
            "reference": list(self.reference),
            "counts": {s: sum(d.status == s for d in self.decisions.values()) for s in STATUSES},
            "groups": {
                str(gid): {
                    "status": d.status,
                    "keep": d.keep,
                    "not_duplicate": dict(d.not_duplicate),
                    "scan_keep": self.groups[gid].keep,
                }
                for gid, d in self.decisions.items()
                if not d.default
            },
        }

    def save(self) -> Path:
        """Write the reviewed report atomically and durably.

        Raises:
            InputError: it cannot be written.
        """
        return write_text(self.output, to_json(self.reviewed()), what="reviewed report", durable=True)

    # ------------------------------------------------------------------------------------------ deciding

    def decide(
        self, action: str, group: int | None = None, path: str | None = None, groups: Iterable[int] = ()
    ) -> list[int]:
        """Make one decision, remember "not a duplicate" pairs, save; returns the ids of the groups changed.

        Args:
            action: one of :data:`ACTIONS`.
            group: the group (``keep``, ``not-duplicate``, ``reject-group``, ``accept-group``,
                ``reset-group``).
            path: the member (``keep``, ``not-duplicate``).
            groups: the groups of the page (``accept-page``).

        Raises:
            DecisionError: unknown action, group or member, or a decision the group does not allow.
            InputError: the ignore list or the reviewed report cannot be written.
        """
        if action not in ACTIONS:
            raise DecisionError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
        if action == "accept-page":
            ids = [self._group(g) for g in groups]
            changed = [gid for gid in ids if self.decisions[gid].status == "pending"]
            for gid in changed:
                self.decisions[gid].status = "accepted"
        elif action == "keep-best-all":
            changed = self._keep_best_all()
        else:
            if group is None:
                raise DecisionError(f"{action} needs a group")
            gid = self._group(group)
            changed = [gid]
            if action == "keep":
                self._keep(gid, self._member(gid, path))
            elif action == "not-duplicate":
                self._not_duplicate(gid, self._member(gid, path))
            elif action == "reject-group":
                self._reject(gid)
            elif action == "accept-group":
                self._accept(gid)
            else:
                self._reset(gid)
        self.save()
        return changed

    def _group(self, group: Any) -> int:
        try:
            gid = int(group)
        except (TypeError, ValueError):
            gid = -1
        if gid not in self.groups:
            raise DecisionError(f"no group {group!r} in the report")
        return gid

    def _member(self, gid: int, path: str | None) -> str:
        if not path or path not in {m.path for m in self.groups[gid].members}:
            raise DecisionError(f"{path!r} is not a member of group {gid}")
        return path

    def _references(self, gid: int) -> list[str]:
        return [p for p in self.members_of(gid) if in_reference(p, self.reference)]

    def _keep(self, gid: int, path: str) -> None:
        d = self.decisions[gid]
        if path in d.not_duplicate:
            raise DecisionError(f"{path} is marked 'not a duplicate' in group {gid}; unmark it first")
        refs = self._references(gid)
        if refs and path not in refs:
            raise DecisionError(
                f"group {gid} has an image in a reference folder ({refs[0]}), which is always kept"
            )
        if d.status == "rejected":
            self._forget(self._rejection_pairs(gid))
        d.keep = None if path == self.groups[gid].keep else path
        d.status = "accepted"

    def _not_duplicate(self, gid: int, path: str) -> None:
        d = self.decisions[gid]
        if path in d.not_duplicate:  # unmark
            keep = d.not_duplicate.pop(path)
            self._forget([(path, keep)])
            return
        keep = self.keep_of(gid)
        if path == keep:
            raise DecisionError(f"{path} is the kept image of group {gid}; keep another image first")
        self._remember([(path, keep)])
        d.not_duplicate[path] = keep

    def _rejection_pairs(self, gid: int) -> list[tuple[str, str]]:
        keep = self.keep_of(gid)
        return [(p, keep) for p in self.members_of(gid) if p != keep]

    def _reject(self, gid: int) -> None:
        d = self.decisions[gid]
        if d.status == "rejected":  # un-reject
            self._forget(self._rejection_pairs(gid))
            d.status = "pending"
            return
        self._remember(self._rejection_pairs(gid))
        d.status = "rejected"

    def _accept(self, gid: int) -> None:
        d = self.decisions[gid]
        if d.status == "accepted":
            d.status = "pending"
            return
        if d.status == "rejected":
            self._forget(self._rejection_pairs(gid))
        d.status = "accepted"

    def _reset(self, gid: int) -> None:
        d = self.decisions[gid]
        pairs = list(d.not_duplicate.items())
        if d.status == "rejected":
            pairs += self._rejection_pairs(gid)
        self._forget(pairs)
        self.decisions[gid] = GroupDecision()

    def _keep_best_all(self) -> list[int]:
        changed = []
        for gid, group in self.groups.items():
            d = self.decisions[gid]
            if d.status == "rejected":
                continue
            by_path = {m.path: m for m in group.members}
            members = [by_path[p] for p in self.members_of(gid)]
            if any(m.width is None or m.height is None for m in members):
                continue  # a hand-written report without pixel sizes: leave its choice alone
            best = members[choose_keep([KeptView(m) for m in members], "best", self.reference)].path
            if best != self.keep_of(gid):
                d.keep = None if best == group.keep else best
                changed.append(gid)
        return changed

    def _remember(self, pairs: Sequence[tuple[str, str]]) -> None:
        if self.ignore is not None and pairs:
            self.ignore.add(pairs, note=f"dedup review {self.source_path}")

    def _forget(self, pairs: Sequence[tuple[str, str]]) -> None:
        if self.ignore is not None and pairs:
            self.ignore.remove(pairs)


def _parse_decision(value: Any) -> GroupDecision | None:
    if not isinstance(value, Mapping) or value.get("status") not in STATUSES:
        return None
    keep = value.get("keep")
    marked = value.get("not_duplicate") or {}
    if (keep is not None and not isinstance(keep, str)) or not isinstance(marked, Mapping):
        return None
    return GroupDecision(
        status=str(value["status"]),
        keep=keep,
        not_duplicate={str(k): str(v) for k, v in marked.items()},
    )
