"""Report files: JSON and CSV text of a :class:`~dedup.report.schema.Report`, ``clusters.csv``, destination
checks and the atomic writer every report, clusters file and score file goes through."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from dedup.config import DEFAULT_MAX_PIXELS
from dedup.errors import InputError
from dedup.report.html import html_thumbnail_paths, make_thumbnails, map_coordinates, to_html
from dedup.report.schema import Report
from dedup.report.wording import display_text, json_text

ProgressFn = Callable[[str, int, "int | None"], None]

FORMATS = (".json", ".csv", ".html")
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
CLUSTERS_CSV_COLUMNS = ("path", "cluster", "name", "distance_to_centre")


def to_json(report: Report) -> str:
    """The JSON text of ``report`` (indented, UTF-8 characters kept, see :func:`json_text`)."""
    return json_text(report.to_dict(), indent=2) + "\n"


def to_csv(report: Report) -> str:
    """One row per image in a group: group id, path, kept yes/no, similarity, bytes, width, height,
    inliers (empty when not verified), evidence (keep | verified | similar), proposed_by (joined by '+')."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in report.groups:
        for m in group.members:
            writer.writerow(
                [
                    group.id,
                    display_text(m.path),
                    "yes" if m.path == group.keep else "no",
                    m.similarity_to_keep,
                    m.bytes,
                    m.width,
                    m.height,
                    "" if m.inliers is None else m.inliers,
                    m.evidence or "",
                    "+".join(m.proposed_by),
                ]
            )
    return buf.getvalue()


def clusters_csv(report: Report) -> str:
    """``clusters.csv``: one row per image of a clustering report: path, cluster id, cluster (folder) name,
    cosine distance to the cluster's centre."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CLUSTERS_CSV_COLUMNS)
    for cluster in report.clusters or ():
        for m in cluster.members:
            writer.writerow([display_text(m.path), cluster.id, cluster.name, m.distance_to_centre])
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


def _max_pixels(report: Report) -> int:
    """The scan's ``decode.max_pixels`` (thumbnails are decoded with the same protection)."""
    decode = report.params.get("decode")
    value = decode.get("max_pixels") if isinstance(decode, Mapping) else None
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_PIXELS


def write_reports(
    report: Report,
    destinations: Sequence[str | Path],
    *,
    vectors: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write ``report`` to every destination (format by extension).

    For HTML the thumbnails are made once for all pages (phase ``thumbnails``) and the collection map is
    laid out from ``vectors`` (phase ``map``; no map when None).
    """
    coordinates = None
    thumbnails = None
    if any(Path(d).suffix.lower() == ".html" for d in destinations):
        if vectors is not None:
            coordinates = map_coordinates(vectors, progress=progress)
        thumbnails = make_thumbnails(
            html_thumbnail_paths(report), max_pixels=_max_pixels(report), progress=progress
        )
    return [
        write_report(report, d, coordinates=coordinates, thumbnails=thumbnails, progress=progress)
        for d in destinations
    ]


def write_report(
    report: Report,
    path: str | Path,
    *,
    coordinates: np.ndarray | None = None,
    thumbnails: Mapping[str, str | None] | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``report`` as JSON, CSV or HTML (by extension), atomically: a reader never sees half a file.

    Args:
        report: the report.
        path: destination; ``.json``, ``.csv`` or ``.html``.
        coordinates: HTML only: map coordinates aligned with ``report.images`` (no map when omitted).
        thumbnails: HTML only: path -> base64 JPEG; made from the files of
            :func:`~dedup.report.html.html_thumbnail_paths` with :func:`~dedup.report.html.make_thumbnails`
            (reporting phase ``thumbnails`` to ``progress``) when omitted.
        progress: optional callback ``(phase, done, total)``.
    """
    p = check_destination(path)
    suffix = p.suffix.lower()
    if suffix == ".html":
        if thumbnails is None:
            thumbnails = make_thumbnails(
                html_thumbnail_paths(report), max_pixels=_max_pixels(report), progress=progress
            )
        text = to_html(report, thumbnails=thumbnails, coordinates=coordinates)
    else:
        text = to_csv(report) if suffix == ".csv" else to_json(report)
    return write_text(p, text, what="report")


def write_clusters_csv(report: Report, path: str | Path) -> Path:
    """Write :func:`clusters_csv` of ``report`` to ``path`` (atomically; an existing file is replaced)."""
    return write_text(check_destination(path), clusters_csv(report), what="clusters file")


def write_text(path: str | Path, text: str, *, what: str = "file", durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file + rename).

    With ``durable`` the file's data is fsynced before the rename and the folder after it, so the new
    content also survives a power cut (the reviewed report of ``dedup review`` is written so).

    Raises:
        InputError: the file cannot be written (``what`` names it in the message).
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, p)
        tmp = ""
        if durable:
            fsync_folder(folder)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {what} {p}: {e.strerror or e}") from e
    return p


def fsync_folder(folder: str | Path) -> None:
    """Make a folder's entries (a file created, renamed or removed in it) durable; best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (other threads may create files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
