"""Reports of a scan: a plain dict with a stable schema (version 1), written as JSON or CSV.

The schema is documented in the README. Paths are absolute. ``members`` includes the kept image.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dedup import __version__
from dedup.errors import InputError
from dedup.pipeline import ScanResult

SCHEMA_VERSION = 1
FORMATS = (".json", ".csv")
CSV_COLUMNS = (
    "group_id",
    "path",
    "kept",
    "similarity",
    "bytes",
    "width",
    "height",
    "inliers",
    "evidence",
    "proposed_by",
)


def to_dict(result: ScanResult) -> dict[str, Any]:
    """The JSON report of ``result`` (schema version 1) as plain Python data."""
    images = result.images
    groups = []
    for number, group in enumerate(result.groups, start=1):
        members = []
        for m, sim, flipped in zip(group.members, group.similarities, group.mirrored, strict=True):
            ev = result.evidence(m, group.keep)
            members.append(
                {
                    "path": images[m].path,
                    "similarity_to_keep": round(sim, 6),
                    "bytes": images[m].size,
                    "width": images[m].width,
                    "height": images[m].height,
                    "mtime": images[m].mtime,
                    "mirrored": flipped,
                    "evidence": ev.reason,
                    "inliers": ev.inliers,
                    "coverage": ev.coverage,
                    "proposed_by": list(ev.proposed_by),
                    "similarities": ev.similarities,
                }
            )
        groups.append({"id": number, "keep": images[group.keep].path, "members": members})
    params: dict[str, Any] = result.config.to_dict()
    params["threshold"] = result.threshold
    params["verified"] = result.verified
    params["thresholds"] = {
        name: {"plain": t.plain, "candidate": t.candidate, "sure": t.sure}
        for name, t in result.thresholds.items()
    }
    return {
        "version": SCHEMA_VERSION,
        "tool": f"dedup {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "paths": result.paths,
        "extractor": result.extractor,
        "params": params,
        "stats": {
            "images": len(images),
            "skipped": len(result.skipped),
            "groups": len(result.groups),
            "duplicates": result.duplicates,
            "reclaimable_bytes": result.reclaimable_bytes,
            "chain_splits": result.chain_splits,
            "seconds": {
                k: round(v, 3)
                for k, v in result.seconds.items()
                if k in ("decode_extract", "index", "verify", "cluster")
            }
            | {k: round(result.seconds.get(k, 0.0), 3) for k in ("decode_extract", "index", "cluster")},
        },
        "groups": groups,
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        "images": [
            {"path": r.path, "bytes": r.size, "mtime": r.mtime, "width": r.width, "height": r.height}
            for r in images
        ],
    }


def skipped_reasons(report: dict[str, Any]) -> Counter[str]:
    """How many files were skipped for each reason (reasons cut at the first ':' so they group)."""
    return Counter(s["reason"].split(":")[0] for s in report["skipped"])


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    """One row per image in a group: group id, path, kept yes/no, similarity, bytes, width, height,
    inliers (empty when not verified), evidence (keep | verified | similar), proposed_by (joined by '+')."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in report["groups"]:
        for m in group["members"]:
            kept = "yes" if m["path"] == group["keep"] else "no"
            inliers = m.get("inliers")
            writer.writerow(
                [
                    group["id"],
                    m["path"],
                    kept,
                    m["similarity_to_keep"],
                    m["bytes"],
                    m["width"],
                    m["height"],
                    "" if inliers is None else inliers,
                    m.get("evidence", ""),
                    "+".join(m.get("proposed_by", [])),
                ]
            )
    return buf.getvalue()


def check_destination(path: str | Path) -> Path:
    """Validate a report destination before the (possibly long) scan starts.

    Raises:
        InputError: unsupported extension, missing or unwritable folder, or the path is a folder.
    """
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise InputError(
            f"report {p}: unsupported format {p.suffix or '(none)'}; use one of {', '.join(FORMATS)}"
        )
    if p.is_dir():
        raise InputError(f"report {p} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write report {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"cannot write report {p}: permission denied")
    return p


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON or CSV (by extension), atomically: a reader never sees half a file."""
    p = check_destination(path)
    text = to_csv(report) if p.suffix.lower() == ".csv" else to_json(report)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write report {p}: {e.strerror or e}") from e
    return p


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a JSON report written by :func:`write_report` (for ``--from-report``).

    Raises:
        InputError: missing, unreadable, not JSON, or not a dedup report of a supported version.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"report {p} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read report {p}: {e}") from e
    except json.JSONDecodeError as e:
        raise InputError(f"report {p} is not valid JSON (line {e.lineno})") from e
    if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION or "groups" not in data:
        raise InputError(f"{p} is not a dedup report of schema version {SCHEMA_VERSION}")
    return data
