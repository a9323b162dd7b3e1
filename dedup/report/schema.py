"""The report of a scan as a typed value (schema version 1), parsed once, written back unchanged.

:class:`Report` is what ``prune``/``group --from-report``, ``evaluate``, the HTML page and the CLI summary
read; :func:`from_result` makes one from a :class:`~dedup.pipeline.ScanResult`, :meth:`Report.from_dict`
checks and parses the JSON form (the README documents it), :meth:`Report.to_dict` gives it back. Keys a
reader does not know (a newer dedup, a hand edit) are kept in ``extra`` and written back, so
``Report.from_dict(d).to_dict() == d`` for every valid report.

Cluster folder names (``cluster-0001`` or the sanitised name from names.yaml) are part of a clustering
report's meaning and are decided here (:func:`cluster_folders`), for the HTML page and ``dedup group``
alike.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dedup import __version__
from dedup.across import leakage
from dedup.errors import ReportError

if TYPE_CHECKING:
    from dedup.pipeline import ScanResult

SCHEMA_VERSION = 1
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ field checks


def _need(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise ReportError(f"{what} has no {key!r}")
    return d[key]


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ReportError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _path(value: Any, what: str) -> str:
    """A path string: non-empty, without NUL bytes (no file name holds one; the OS refuses them)."""
    text = _str(value, what)
    if "\0" in text:
        raise ReportError(f"{what} {text!r} contains a NUL byte")
    return text


def _int(value: Any, what: str, *, optional: bool = False, lo: int | None = None) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportError(f"{what} must be an integer, not {value!r}")
    if lo is not None and value < lo:
        raise ReportError(f"{what} must be at least {lo}, not {value!r}")
    return value


def _num(value: Any, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{what} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ReportError(f"{what} must be a finite number, not {value!r}")
    return number if isinstance(value, int) else value


def _bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ReportError(f"{what} must be true, false or null, not {value!r}")


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ReportError(f"{what} must be a list, not {type(value).__name__}")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(f"{what} must be an object, not {value!r}")
    return value


def _extra(d: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


def _put(out: dict[str, Any], key: str, value: Any, present: bool) -> None:
    if present:
        out[key] = value


# ------------------------------------------------------------------------------------------ value types


_MEMBER_KEYS = (
    "path",
    "similarity_to_keep",
    "bytes",
    "width",
    "height",
    "mtime",
    "mirrored",
    "evidence",
    "inliers",
    "coverage",
    "proposed_by",
    "similarities",
    "rotation",
    "format",
    "quality",
    "lossless",
    "derived",
    "grayscale",
    "recompressed",
)


@dataclass(frozen=True)
class ReportMember:
    """One image of a duplicate group.

    Attributes:
        path: absolute path.
        similarity_to_keep: cosine similarity to the group's kept image (1.0 for the kept image).
        bytes, width, height, mtime: the file's size, full pixel size (after EXIF orientation) and
            modification time (seconds) when scanned; None in a hand-written report that omits them.
        mirrored: matches the kept image as a mirror image.
        evidence: why it is in the group: ``keep``, ``verified``, ``similar`` (None in older reports).
        inliers, coverage: keypoint verification figures, None when the pair was not verified.
        proposed_by: extractors whose candidate threshold the pair reached.
        similarities: the pair's similarity under each extractor.
        rotation: degrees the keypoint transform from the kept image turns by (verified members), or None.
        format, quality, lossless, derived, grayscale, recompressed: the file's
            :class:`dedup.facts.ImageFacts` (what the keep policy ``best`` compares), None when not known.
        present: the optional keys the parsed dict had (to write back exactly what was read).
        extra: keys this version does not know.
    """

    path: str
    similarity_to_keep: float = 1.0
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    mtime: float | None = None
    mirrored: bool = False
    evidence: str | None = None
    inliers: int | None = None
    coverage: float | None = None
    proposed_by: tuple[str, ...] = ()
    similarities: dict[str, float] | None = None
    rotation: int | None = None
    format: str | None = None
    quality: int | None = None
    lossless: bool | None = None
    derived: bool | None = None
    grayscale: bool | None = None
    recompressed: bool | None = None
    present: frozenset[str] = frozenset(_MEMBER_KEYS)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """File size in bytes (0 when the report does not say), for :mod:`dedup.keep`."""
        return self.bytes or 0

    @classmethod
    def from_dict(cls, d: Any, what: str = "group member") -> ReportMember:
        d = _mapping(d, what)
        sims = d.get("similarities")
        if sims is not None:
            sims = {
                str(k): float(_num(v, f"{what} similarity") or 0.0) for k, v in _mapping(sims, what).items()
            }
        proposed = d.get("proposed_by") or []
        return cls(
            path=_path(_need(d, "path", what), f"{what} path"),
            similarity_to_keep=_num(d.get("similarity_to_keep", 1.0), f"{what} similarity_to_keep") or 0.0,
            bytes=_int(d.get("bytes"), f"{what} bytes", optional=True, lo=0),
            width=_int(d.get("width"), f"{what} width", optional=True, lo=0),
            height=_int(d.get("height"), f"{what} height", optional=True, lo=0),
            mtime=_num(d.get("mtime"), f"{what} mtime", optional=True),
            mirrored=bool(d.get("mirrored", False)),
            evidence=None if d.get("evidence") is None else str(d["evidence"]),
            inliers=_int(d.get("inliers"), f"{what} inliers", optional=True),
            coverage=_num(d.get("coverage"), f"{what} coverage", optional=True),
            proposed_by=tuple(str(p) for p in _list(proposed, f"{what} proposed_by")),
            similarities=sims,
            rotation=_int(d.get("rotation"), f"{what} rotation", optional=True),
            format=None if d.get("format") is None else str(d["format"]),
            quality=_int(d.get("quality"), f"{what} quality", optional=True),
            lossless=_bool(d.get("lossless"), f"{what} lossless"),
            derived=_bool(d.get("derived"), f"{what} derived"),
            grayscale=_bool(d.get("grayscale"), f"{what} grayscale"),
            recompressed=_bool(d.get("recompressed"), f"{what} recompressed"),
            present=frozenset(k for k in _MEMBER_KEYS if k in d),
            extra=_extra(d, _MEMBER_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        values = {
            "similarity_to_keep": self.similarity_to_keep,
            "bytes": self.bytes,
            "width": self.width,
            "height": self.height,
            "mtime": self.mtime,
            "mirrored": self.mirrored,
            "evidence": self.evidence,
            "inliers": self.inliers,
            "coverage": self.coverage,
            "proposed_by": list(self.proposed_by),
            "similarities": self.similarities,
            "rotation": self.rotation,
            "format": self.format,
            "quality": self.quality,
            "lossless": self.lossless,
            "derived": self.derived,
            "grayscale": self.grayscale,
            "recompressed": self.recompressed,
        }
        for key, value in values.items():
            _put(out, key, value, key in self.present)
        return {**out, **self.extra}


@dataclass(frozen=True)
class ReportGroup:
    """A duplicate group: its id (from 1, largest group first), the kept image's path, the members (the kept
    image among them, listed first by dedup)."""

    id: int
    keep: str
    members: tuple[ReportMember, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, position: int) -> ReportGroup:
        """Parse one group; its ``keep`` must be one of its members (compared as normalised paths): a
        group whose kept image is not among its members would lose every member to ``prune``."""
        what = f"report group #{position}"
        d = _mapping(d, what)
        members = tuple(
            ReportMember.from_dict(m, f"a member of {what}")
            for m in _list(_need(d, "members", what), f"{what} members")
        )
        keep = _path(_need(d, "keep", what), f"{what} keep")
        if os.path.normpath(keep) not in {os.path.normpath(m.path) for m in members}:
            raise ReportError(f"{what}: its keep {keep!r} is not one of its members")
        return cls(
            id=_int(_need(d, "id", what), f"{what} id") or 0,
            keep=keep,
            members=members,
            extra=_extra(d, ("id", "keep", "members")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "keep": self.keep,
            "members": [m.to_dict() for m in self.members],
            **self.extra,
        }

    @property
    def kept(self) -> ReportMember | None:
        """The member whose path is ``keep`` (None if the group does not list it)."""
        return next((m for m in self.members if m.path == self.keep), None)


_IMAGE_KEYS = ("path", "bytes", "mtime", "width", "height", "blank")


@dataclass(frozen=True)
class ReportImage:
    """One decoded image of the scan (grouped or not): path, size, modification time, pixel size, and
    ``blank`` (True: no detail to compare, never grouped; the key is written only when set)."""

    path: str
    bytes: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    blank: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.bytes or 0

    @classmethod
    def from_dict(cls, d: Any) -> ReportImage:
        what = "an 'images' entry"
        d = _mapping(d, what)
        blank = d.get("blank")
        if blank is not None and not isinstance(blank, bool):
            raise ReportError(f"{what} blank must be true or false, not {blank!r}")
        return cls(
            path=_path(_need(d, "path", what), f"{what} path"),
            bytes=_int(d.get("bytes"), f"{what} bytes", optional=True, lo=0),
            mtime=_num(d.get("mtime"), f"{what} mtime", optional=True),
            width=_int(d.get("width"), f"{what} width", optional=True, lo=0),
            height=_int(d.get("height"), f"{what} height", optional=True, lo=0),
            blank=blank,
            extra=_extra(d, _IMAGE_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "bytes": self.bytes,
            "mtime": self.mtime,
            "width": self.width,
            "height": self.height,
        }
        _put(out, "blank", self.blank, self.blank is not None)
        return {**out, **self.extra}


@dataclass(frozen=True)
class ReportSkipped:
    """A file the scan could not use, and why."""

    path: str
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> ReportSkipped:
        what = "a 'skipped' entry"
        d = _mapping(d, what)
        return cls(
            path=_path(_need(d, "path", what), f"{what} path"),
            reason=str(d.get("reason", "")),
            extra=_extra(d, ("path", "reason")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, **self.extra}


@dataclass(frozen=True)
class ClusterMember:
    """An image of a whole-collection cluster and its cosine distance to the cluster's centre."""

    path: str
    distance_to_centre: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> ClusterMember:
        what = "a cluster member"
        d = _mapping(d, what)
        return cls(
            path=_path(_need(d, "path", what), f"{what} path"),
            distance_to_centre=_num(d.get("distance_to_centre"), f"{what} distance_to_centre", optional=True),
            extra=_extra(d, ("path", "distance_to_centre")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "distance_to_centre": self.distance_to_centre, **self.extra}


@dataclass(frozen=True)
class ReportCluster:
    """A cluster of ``dedup group --method agglomerative|kmeans`` (every image is in one).

    Attributes:
        id: from 1, largest cluster first.
        name: ``cluster-0001`` unless the user named it in names.yaml (then ``named`` is True).
        size: number of members.
        members: nearest the centre first.
    """

    id: int
    name: str | None
    size: int
    members: tuple[ClusterMember, ...]
    named: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> ReportCluster:
        what = "a cluster"
        d = _mapping(d, what)
        members = tuple(
            ClusterMember.from_dict(m) for m in _list(_need(d, "members", what), f"{what} members")
        )
        name = d.get("name")
        return cls(
            id=_int(_need(d, "id", what), f"{what} id") or 0,
            name=None if name is None else str(name),
            size=_int(d.get("size", len(members)), f"{what} size") or 0,
            members=members,
            named=bool(d.get("named", False)),
            extra=_extra(d, ("id", "name", "size", "members", "named")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "members": [m.to_dict() for m in self.members],
        }
        if self.named:
            out["named"] = True
        return {**out, **self.extra}


_REPORT_KEYS = (
    "version",
    "tool",
    "created",
    "paths",
    "extractor",
    "params",
    "stats",
    "groups",
    "skipped",
    "images",
    "clustering",
    "clusters",
)


@dataclass(frozen=True)
class Report:
    """A scan report (schema version 1; the README documents every key).

    Attributes:
        paths: absolute scanned roots (empty in a hand-written report that omits them).
        extractor, params, stats: as written by the scan (plain JSON objects).
        groups: the duplicate groups, largest first.
        skipped: files the scan could not use.
        images: every decoded image; None for a report made before dedup listed them.
        clustering, clusters: a whole-collection clustering (``dedup group --method ...``), else None.
        present: the optional top-level keys the parsed dict had.
        extra: top-level keys this version does not know.
    """

    groups: tuple[ReportGroup, ...]
    paths: tuple[str, ...] = ()
    version: int = SCHEMA_VERSION
    tool: str | None = None
    created: str | None = None
    extractor: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[ReportSkipped, ...] = ()
    images: tuple[ReportImage, ...] | None = None
    clustering: dict[str, Any] | None = None
    clusters: tuple[ReportCluster, ...] | None = None
    present: frozenset[str] = frozenset(_REPORT_KEYS[:-2])
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> Report:
        """Check and parse a report dict.

        Required: ``version`` 1 and a ``groups`` list whose groups have ``id``, ``keep`` and ``members``
        (each with a ``path``); every other key is optional, but must have the documented type when present.

        Raises:
            ReportError: the dict is not a dedup report of schema version 1 (the message names the key).
        """
        if not isinstance(d, Mapping) or d.get("version") != SCHEMA_VERSION or "groups" not in d:
            raise ReportError(f"not a dedup report of schema version {SCHEMA_VERSION}")
        groups = _list(d["groups"], "the report's 'groups'")
        paths = _list(d.get("paths", []), "the report's 'paths'")
        images = d.get("images")
        clusters = d.get("clusters")
        clustering = d.get("clustering")
        return cls(
            groups=tuple(ReportGroup.from_dict(g, k + 1) for k, g in enumerate(groups)),
            paths=tuple(_path(p, "a scanned path") for p in paths),
            tool=None if d.get("tool") is None else str(d["tool"]),
            created=None if d.get("created") is None else str(d["created"]),
            extractor=dict(_mapping(d.get("extractor", {}), "the report's 'extractor'")),
            params=dict(_mapping(d.get("params", {}), "the report's 'params'")),
            stats=dict(_mapping(d.get("stats", {}), "the report's 'stats'")),
            skipped=tuple(ReportSkipped.from_dict(s) for s in _list(d.get("skipped", []), "'skipped'")),
            images=None
            if images is None
            else tuple(ReportImage.from_dict(i) for i in _list(images, "'images'")),
            clustering=None if clustering is None else dict(_mapping(clustering, "'clustering'")),
            clusters=None
            if clusters is None
            else tuple(ReportCluster.from_dict(c) for c in _list(clusters, "'clusters'")),
            present=frozenset(k for k in _REPORT_KEYS if k in d),
            extra=_extra(d, _REPORT_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (keys in the documented order; only the optional keys that were present)."""
        out: dict[str, Any] = {"version": self.version}
        values: list[tuple[str, Callable[[], Any]]] = [
            ("tool", lambda: self.tool),
            ("created", lambda: self.created),
            ("paths", lambda: list(self.paths)),
            ("extractor", lambda: self.extractor),
            ("params", lambda: self.params),
            ("stats", lambda: self.stats),
            ("groups", lambda: [g.to_dict() for g in self.groups]),
            ("skipped", lambda: [s.to_dict() for s in self.skipped]),
            ("images", lambda: None if self.images is None else [i.to_dict() for i in self.images]),
        ]
        for key, value in values:
            _put(out, key, value(), key in self.present or key == "groups")
        if self.clustering is not None:
            out["clustering"] = self.clustering
        if self.clusters is not None:
            out["clusters"] = [c.to_dict() for c in self.clusters]
        return {**out, **self.extra}

    def replace(self, **changes: Any) -> Report:
        """A copy with ``changes`` (dataclass fields)."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        from dedup.report.notebook import short_repr

        return short_repr(self)

    def _repr_html_(self) -> str:
        """The compact HTML summary a notebook shows (the first groups' thumbnails)."""
        from dedup.report.notebook import summary_html

        return summary_html(self)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per group member (group, path, kept, similarity, evidence, ...): ready for
        ``pandas.DataFrame(report.rows())``; see :func:`dedup.report.notebook.rows`."""
        from dedup.report.notebook import rows

        return rows(self)

    @property
    def keep_policy(self) -> str | None:
        """The ``keep.policy`` the scan used (``params.keep.policy``), if the report says."""
        keep = self.params.get("keep")
        if isinstance(keep, Mapping):
            policy = keep.get("policy")
            return policy if isinstance(policy, str) else None
        return keep if isinstance(keep, str) else None

    @property
    def reference(self) -> tuple[str, ...]:
        """The folders whose images the scan kept and that are never moved or deleted:
        ``params.keep.reference`` and, for an ``--across A B`` scan, A (``params.cluster.across``)."""
        folders: list[str] = []
        keep, cluster = self.params.get("keep"), self.params.get("cluster")
        if isinstance(keep, Mapping) and isinstance(keep.get("reference"), list):
            folders += [f for f in keep["reference"] if isinstance(f, str) and f]
        if isinstance(cluster, Mapping) and isinstance(cluster.get("across"), list) and cluster["across"]:
            first = cluster["across"][0]
            folders += [first] if isinstance(first, str) and first else []
        return tuple(dict.fromkeys(folders))

    def skipped_reasons(self) -> dict[str, int]:
        """How many files were skipped for each reason (reasons cut at the first ':' so they group)."""
        counts: dict[str, int] = {}
        for s in self.skipped:
            reason = s.reason.split(":")[0]
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def load_report(path: str | Path) -> Report:
    """Read and check a JSON report file (for ``--from-report``, ``evaluate``, ``review``).

    Raises:
        ReportError: missing, unreadable, not JSON, or not a dedup report of schema version 1.
    """
    p = Path(path)
    try:
        if p.exists() and not p.is_file():
            raise ReportError(f"report {p} is not a regular file")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ReportError(f"report {p} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read report {p}: {e}") from e
    except json.JSONDecodeError as e:
        raise ReportError(f"report {p} is not valid JSON (line {e.lineno})") from e
    except RecursionError as e:  # the parser's depth is bounded by Python's recursion limit
        raise ReportError(f"report {p} is nested too deeply to be a dedup report") from e
    try:
        return Report.from_dict(data)
    except ReportError as e:
        if str(e).startswith("not a dedup report"):
            raise ReportError(f"{p} is not a dedup report of schema version {SCHEMA_VERSION}") from None
        raise ReportError(f"report {p}: {e}") from None


# ------------------------------------------------------------------------------------------ from a scan


def from_result(result: ScanResult) -> Report:
    """The report of a scan: every group with each member's evidence, the skipped files, every image, and
    (after :func:`~dedup.pipeline.cluster_collection`) the clusters."""
    images = result.images
    groups = []
    for number, group in enumerate(result.groups, start=1):
        members = []
        for m, sim, flipped in zip(group.members, group.similarities, group.mirrored, strict=True):
            ev = result.evidence(m, group.keep)
            members.append(
                ReportMember(
                    path=images[m].path,
                    similarity_to_keep=round(sim, 6),
                    bytes=images[m].size,
                    width=images[m].width,
                    height=images[m].height,
                    mtime=images[m].mtime,
                    mirrored=flipped,
                    evidence=ev.reason,
                    inliers=ev.inliers,
                    coverage=ev.coverage,
                    proposed_by=tuple(ev.proposed_by),
                    similarities=ev.similarities,
                    rotation=ev.rotation,
                    format=images[m].format,
                    quality=images[m].quality,
                    lossless=images[m].lossless,
                    derived=images[m].derived,
                    grayscale=images[m].grayscale,
                    recompressed=images[m].recompressed,
                )
            )
        groups.append(ReportGroup(number, images[group.keep].path, tuple(members)))
    params: dict[str, Any] = result.config.to_dict()
    params["threshold"] = result.threshold
    params["verified"] = result.verified
    if getattr(result, "calibrations", None):
        params["calibrated"] = {name: cal.to_dict() for name, cal in result.calibrations.items()}
    params["thresholds"] = {
        name: {"plain": t.plain, "candidate": t.candidate, "sure": t.sure}
        for name, t in result.thresholds.items()
    }
    seconds = {
        k: round(v, 3)
        for k, v in result.seconds.items()
        if k in ("decode_extract", "index", "verify", "cluster")
    }
    seconds |= {k: round(result.seconds.get(k, 0.0), 3) for k in ("decode_extract", "index", "cluster")}
    clustering, clusters = _clusters(result)
    blank = set(result.blank)
    stats: dict[str, Any] = {
        "images": len(images),
        "skipped": len(result.skipped),
        "groups": len(result.groups),
        "duplicates": result.duplicates,
        "reclaimable_bytes": result.reclaimable_bytes,
        "chain_splits": result.chain_splits,
        "blank": len(blank),
        "seconds": seconds,
        "scale": dict(result.scale),
    }
    if result.verifier is not None:
        across = leakage(images, result.verifier.graph(len(images)), result.config)
        if across is not None:
            stats["across"] = across
    return Report(
        tool=f"dedup {__version__}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        paths=tuple(result.paths),
        extractor=result.extractor,
        params=params,
        stats=stats,
        groups=tuple(groups),
        skipped=tuple(ReportSkipped(s.path, s.reason) for s in result.skipped),
        images=tuple(
            ReportImage(r.path, r.size, r.mtime, r.width, r.height, blank=True if i in blank else None)
            for i, r in enumerate(images)
        ),
        clustering=clustering,
        clusters=clusters,
    )


def _clusters(result: ScanResult) -> tuple[dict[str, Any] | None, tuple[ReportCluster, ...] | None]:
    """``clustering`` (method, params, curve) and ``clusters`` (largest first, members nearest the centre
    first, distances as cosine distance) of a clustered scan; ``(None, None)`` otherwise."""
    c = result.clustering
    if c is None:
        return None, None
    k = c.n_clusters
    members: list[list[ClusterMember]] = [[] for _ in range(k)]
    for i, (label, dist) in enumerate(zip(c.labels.tolist(), c.distances.tolist(), strict=True)):
        members[label].append(ClusterMember(result.images[i].path, round(dist, 6)))
    clusters = []
    for label, ms in enumerate(members):
        ms.sort(key=lambda m: (m.distance_to_centre or 0.0, m.path))
        cid = label + 1
        clusters.append(ReportCluster(cid, cluster_folder(cid, k), len(ms), tuple(ms)))
    clustering = {
        "method": c.method,
        "n_clusters": k,
        "params": c.params,
        "curve": [dict(p) for p in c.curve],
    }
    return clustering, tuple(clusters)


# ------------------------------------------------------------------------------------------ cluster folders

_MAX_NAME = 100


def cluster_folder(cluster_id: int, n_clusters: int) -> str:
    """Default folder name of a cluster: ``cluster-0001`` (zero-padded to at least 4 digits)."""
    return f"cluster-{cluster_id:0{max(4, len(str(n_clusters)))}d}"


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


def cluster_folders(clusters: Sequence[ReportCluster]) -> tuple[list[str], list[str]]:
    """The folder of each cluster of a report, and notes about names that had to change.

    A cluster's folder is its sanitised ``name`` (see :func:`sanitize_folder_name`), or
    ``cluster-0001``-style when it has none. Clusters the user gave the same name (``named``, compared
    case-insensitively) share one folder -- that is how clusters are merged by hand; a generated name that
    clashes with an earlier folder gets `` (2)``, `` (3)``....

    Returns:
        ``(folders, notes)``: one folder name per cluster, in order.
    """
    width = max(4, len(str(len(clusters))))
    folders: list[str] = []
    notes: list[str] = []
    owner: dict[str, tuple[str, bool, int]] = {}  # lower-case name -> (folder, named by user, first id)
    for cluster in clusters:
        cid = cluster.id
        default = f"cluster-{cid:0{width}d}"
        raw = cluster.name
        named = cluster.named
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
        owner[key] = (name, named, cid)
        folders.append(name)
    return folders, notes
