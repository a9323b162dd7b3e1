"""How a report (and a scan result) shows in a Jupyter notebook: a compact HTML summary with the first
groups' thumbnails (``_repr_html_``), and one row per group member for ``pandas.DataFrame(report.rows())``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dedup.report.thumbs import make_thumbnails
from dedup.report.wording import extractor_label, human_bytes

if TYPE_CHECKING:
    from dedup.report.schema import Report

NOTEBOOK_GROUPS = 4  # groups shown with thumbnails
NOTEBOOK_MEMBERS = 6  # thumbnails per group
NOTEBOOK_THUMB = 96  # longest side of a notebook thumbnail


def rows(report: Report) -> list[dict[str, Any]]:
    """One flat dict per member of every group, in report order (``pandas.DataFrame(rows)`` ready).

    Keys: ``group``, ``path``, ``folder``, ``name``, ``kept``, ``similarity``, ``evidence``, ``inliers``,
    ``coverage``, ``proposed_by`` (joined by ``+``), ``mirrored``, ``rotation``, ``bytes``, ``width``,
    ``height``, ``format``, ``quality``, ``lossless``, ``derived``.
    """
    out = []
    for g in report.groups:
        for m in g.members:
            out.append(
                {
                    "group": g.id,
                    "path": m.path,
                    "folder": os.path.dirname(m.path),
                    "name": os.path.basename(m.path),
                    "kept": m.path == g.keep,
                    "similarity": m.similarity_to_keep,
                    "evidence": m.evidence,
                    "inliers": m.inliers,
                    "coverage": m.coverage,
                    "proposed_by": "+".join(m.proposed_by),
                    "mirrored": m.mirrored,
                    "rotation": m.rotation,
                    "bytes": m.bytes,
                    "width": m.width,
                    "height": m.height,
                    "format": m.format,
                    "quality": m.quality,
                    "lossless": m.lossless,
                    "derived": m.derived,
                }
            )
    return out


def short_repr(report: Report) -> str:
    """``Report(4 groups, 20 duplicates, 1.8 MB reclaimable; 33 images, 3 skipped; phash)``."""
    s = report.stats
    dups = s.get("duplicates", sum(len(g.members) - 1 for g in report.groups))
    freed = s.get("reclaimable_bytes")
    images = s.get("images", len(report.images or ()))
    return (
        f"Report({len(report.groups)} groups, {dups} duplicates"
        + (f", {human_bytes(freed)} reclaimable" if isinstance(freed, int) else "")
        + f"; {images} images, {len(report.skipped)} skipped; {extractor_label(report.extractor)})"
    )


def summary_html(
    report: Report,
    *,
    groups: int = NOTEBOOK_GROUPS,
    members: int = NOTEBOOK_MEMBERS,
    thumbnails: Mapping[str, str | None] | None = None,
) -> str:
    """A compact HTML summary: the figures, then the first ``groups`` groups with up to ``members``
    thumbnails each (kept image framed, similarity and evidence under each)."""
    s = report.stats
    figures = [
        ("groups", len(report.groups)),
        ("duplicates", s.get("duplicates", "?")),
        ("reclaimable", human_bytes(s["reclaimable_bytes"]) if "reclaimable_bytes" in s else "?"),
        ("images", s.get("images", "?")),
        ("skipped", len(report.skipped)),
    ]
    head = " &middot; ".join(f"<b>{html.escape(str(v))}</b> {k}" for k, v in figures)
    shown = report.groups[: max(0, groups)]
    paths = [m.path for g in shown for m in g.members[:members]]
    if thumbnails is None:
        thumbnails = make_thumbnails(paths, size=NOTEBOOK_THUMB)
    blocks = []
    for g in shown:
        cells = []
        for m in g.members[:members]:
            kept = m.path == g.keep
            b64 = thumbnails.get(m.path)
            img = (
                f'<img src="data:image/jpeg;base64,{b64}" style="max-width:{NOTEBOOK_THUMB}px;'
                f'max-height:{NOTEBOOK_THUMB}px">'
                if b64
                else f'<div style="width:{NOTEBOOK_THUMB}px;height:{NOTEBOOK_THUMB}px;background:#eee"></div>'
            )
            if kept:
                why = "kept"
            elif m.evidence == "verified":
                why = f"verified, {m.inliers} inliers"
            else:
                why = f"{m.similarity_to_keep * 100:.1f} % similar"
            border = "2px solid #1a7f37" if kept else "2px solid transparent"
            style = (
                f"vertical-align:top;border:{border};padding:2px;font-size:11px;"
                f"max-width:{NOTEBOOK_THUMB + 8}px;word-break:break-all"
            )
            cells.append(
                f'<td style="{style}" title="{html.escape(m.path)}">{img}<br>'
                f"{html.escape(os.path.basename(m.path))}<br>{html.escape(why)}</td>"
            )
        more = len(g.members) - members
        if more > 0:
            cells.append(f'<td style="vertical-align:middle">+{more} more</td>')
        title = f"<b>Group {g.id}</b> ({len(g.members)} images)"
        blocks.append(f"<div>{title}<table><tr>{''.join(cells)}</tr></table></div>")
    rest = len(report.groups) - len(shown)
    tail = f"<p>+ {rest} more groups (<code>.rows()</code> lists every member)</p>" if rest > 0 else ""
    return (
        f"<div class='dedup-report'><p>dedup report: {head} &middot; "
        f"{html.escape(extractor_label(report.extractor))}</p>{''.join(blocks)}{tail}</div>"
    )
