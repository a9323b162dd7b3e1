"""Reports of a scan: the typed :class:`Report` (schema version 1) and its JSON, CSV and HTML files.

- :mod:`dedup.report.schema`: :class:`Report` and its parts, parsing (``from_dict``, :func:`load_report`),
  :func:`from_result` (a scan's report), cluster folder names.
- :mod:`dedup.report.files`: JSON / CSV text, ``clusters.csv``, destination checks, atomic writes.
- :mod:`dedup.report.html`: the self-contained HTML page (map, cluster grids; the card and viewer code in
  ``templates/cards.js`` is shared with the review page).
- :mod:`dedup.report.thumbs`: thumbnails as base64 JPEG; :mod:`dedup.report.wording`: sizes and names.
- :mod:`dedup.report.notebook`: ``Report.rows()`` and the compact HTML summary a notebook shows.
"""

from __future__ import annotations

from dedup.report.schema import (
    SCHEMA_VERSION,
    ClusterMember,
    Report,
    ReportCluster,
    ReportError,
    ReportGroup,
    ReportImage,
    ReportMember,
    ReportSkipped,
    from_result,
    load_report,
)

__all__ = [
    "SCHEMA_VERSION",
    "ClusterMember",
    "Report",
    "ReportCluster",
    "ReportError",
    "ReportGroup",
    "ReportImage",
    "ReportMember",
    "ReportSkipped",
    "from_result",
    "load_report",
]
