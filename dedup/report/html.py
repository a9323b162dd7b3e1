"""The HTML report: one self-contained page (inline CSS/JS, thumbnails as data URIs, no network access) with
the duplicate groups, a clustering's sample grids and a map of the collection.

The page template is ``dedup/report/templates/report.html``; :func:`to_html` fills it from a
:class:`~dedup.report.schema.Report`, thumbnails (:func:`make_thumbnails`) and optional map coordinates
(:func:`map_coordinates`).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dedup.report.schema import (
    ClusterMember,
    Report,
    ReportCluster,
    ReportMember,
    cluster_folders,
)
from dedup.report.thumbs import THUMBNAIL_QUALITY as THUMBNAIL_QUALITY  # re-exported with the page
from dedup.report.thumbs import THUMBNAIL_SIZE as THUMBNAIL_SIZE
from dedup.report.thumbs import make_thumbnails as make_thumbnails
from dedup.report.thumbs import thumbnail as thumbnail
from dedup.report.wording import extractor_label, human_bytes

ProgressFn = Callable[[str, int, "int | None"], None]


PAGE_SIZE = 50  # groups per page of the HTML report
CLUSTER_PAGE_SIZE = 20  # clusters per page of the HTML report
CLUSTER_SAMPLE = 12  # thumbnails per cluster in the HTML report: the members nearest the cluster's centre
TSNE_EXACT_MAX = 200  # exact t-SNE up to this many images, Barnes-Hut above
TSNE_SAMPLE = 2000  # t-SNE lays out at most this many images; the others are placed beside their nearest
MAP_NEIGHBOURS = 5  # sampled images an image not in the sample is placed among
MAP_PCA_DIMS = 50  # dimensions kept by PCA before t-SNE
MAP_PERPLEXITY = 15.0  # t-SNE perplexity (smaller: duplicate groups stay tight, and it is faster)
MAP_ITERATIONS = 400  # t-SNE iterations (250 is scikit-learn's minimum; 1000 its default)
MAP_WIDTH, MAP_HEIGHT = 960, 540  # SVG user units of the collection map


def map_coordinates(
    vectors: np.ndarray, *, method: str = "auto", random_state: int = 0, progress: ProgressFn | None = None
) -> np.ndarray:
    """2-D coordinates of feature vectors for the collection map of the HTML report.

    ``auto`` / ``tsne``: the vectors are reduced to at most :data:`MAP_PCA_DIMS` dimensions with PCA, then
    laid out with scikit-learn's t-SNE (exact below :data:`TSNE_EXACT_MAX` images, Barnes-Hut above). Above
    :data:`TSNE_SAMPLE` images t-SNE runs on a fixed random sample of that size and every other image is
    placed at the similarity-weighted mean of its :data:`MAP_NEIGHBOURS` most similar sampled images, so the
    cost stops growing with the collection (about 4 s at any size on 2 cores) while duplicates still land
    beside each other.

    Args:
        vectors: float array of shape (n_images, dim), e.g. ``ScanResult.embeddings.vectors``.
        method: ``"auto"`` (= ``"tsne"``), ``"tsne"`` or ``"pca"`` (2-D PCA only).
        random_state: seed; equal inputs give equal maps.
        progress: optional callback ``("map", images placed, n_images)``.

    Returns:
        float64 array of shape (n_images, 2); all zeros for fewer than 3 images or identical vectors.
    """
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"method must be auto, tsne or pca, not {method!r}")
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n < 3 or x.ndim != 2 or np.allclose(x, x[0]):
        return np.zeros((n, 2), dtype=np.float64)
    from sklearn.decomposition import PCA

    if method == "pca" or n < 5:
        out = PCA(n_components=min(2, x.shape[1]), random_state=random_state).fit_transform(x)
        if out.shape[1] < 2:
            out = np.hstack([out, np.zeros((n, 1))])
        return np.asarray(out, dtype=np.float64)
    if progress:
        progress("map", 0, n)
    if x.shape[1] > MAP_PCA_DIMS:
        x = PCA(n_components=min(MAP_PCA_DIMS, n), random_state=random_state).fit_transform(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    rng = np.random.default_rng(random_state)
    sample = np.arange(n) if n <= TSNE_SAMPLE else np.sort(rng.choice(n, TSNE_SAMPLE, replace=False))
    out = np.zeros((n, 2), dtype=np.float64)
    out[sample] = _tsne(unit[sample], random_state)
    if progress:
        progress("map", len(sample), n)
    rest = np.setdiff1d(np.arange(n), sample)
    placed = len(sample)
    for start in range(0, len(rest), 2048):
        chunk = rest[start : start + 2048]
        sims = unit[chunk] @ unit[sample].T
        top = np.argpartition(-sims, MAP_NEIGHBOURS - 1, axis=1)[:, :MAP_NEIGHBOURS]
        weights = np.maximum(np.take_along_axis(sims, top, axis=1), 0.0) + 1e-6
        out[chunk] = (weights[:, :, None] * out[sample][top]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
        placed += len(chunk)
        if progress:
            progress("map", placed, n)
    return out


def _tsne(x: np.ndarray, random_state: int) -> np.ndarray:
    """t-SNE of unit vectors (Euclidean distance on them orders pairs like cosine distance)."""
    from sklearn.manifold import TSNE

    n = len(x)
    tsne = TSNE(
        n_components=2,
        perplexity=float(min(MAP_PERPLEXITY, (n - 1) / 3)),
        init="pca",
        learning_rate="auto",
        random_state=random_state,
        max_iter=MAP_ITERATIONS,
        angle=0.8,
        # Barnes-Hut is the fast approximation for large n but pathologically slow for a few dozen points
        # (measured: 32 images 3.9 s vs 0.2 s exact; 300 images 2.8 s vs 3.2 s)
        method="exact" if n <= TSNE_EXACT_MAX else "barnes_hut",
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def cluster_sample(cluster: ReportCluster, size: int = CLUSTER_SAMPLE) -> list[ClusterMember]:
    """The ``size`` members of a report cluster nearest its centre (by ``distance_to_centre``, then path):
    the most typical images, which the HTML report shows as the cluster's sample grid."""
    members = sorted(
        cluster.members,
        key=lambda m: (float("inf") if m.distance_to_centre is None else m.distance_to_centre, m.path),
    )
    return members[: max(0, size)]


def html_thumbnail_paths(report: Report, *, sample: int = CLUSTER_SAMPLE) -> list[str]:
    """The images the HTML report shows as thumbnails: every duplicate-group member, plus the
    :func:`cluster_sample` of each cluster of a clustering report (at most ``sample`` per cluster, so the
    thumbnail work is bounded by groups + ``sample`` x clusters, not by the collection size)."""
    paths = [m.path for g in report.groups for m in g.members]
    for cluster in report.clusters or ():
        paths.extend(m.path for m in cluster_sample(cluster, sample))
    return list(dict.fromkeys(paths))


def _report_clusters(report: Report) -> list[tuple[ReportCluster, str]]:
    """``(cluster, folder)`` of each cluster of a clustering report, largest first (ties by id); ``[]``
    without clusters. The folder is the one ``dedup group`` places the cluster in: ``cluster-0001`` or the
    sanitised name given in names.yaml (:func:`dedup.actions.cluster_folders`, in report order)."""
    clusters = report.clusters
    if not clusters:
        return []
    folders, _ = cluster_folders(clusters)
    pairs = list(zip(clusters, folders, strict=True))
    pairs.sort(key=lambda cf: (-cf[0].size, cf[0].id))
    return pairs


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` can end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _group_colour(group_id: int) -> str:
    """A distinct-looking colour per group (golden-angle hues)."""
    return f"hsl({(group_id * 137.508) % 360:.1f},70%,42%)"


def map_svg(report: Report, coordinates: np.ndarray | None) -> str:
    """The collection map: an inline SVG scatter of ``report.images`` at ``coordinates``.

    Points are coloured by group (images in no group grey, drawn first); each has a ``<title>`` with its
    file name (and group) and a ``data-path`` the page uses to filter on click. In a clustering report
    (``clusters`` key) every point is coloured by its cluster instead, with the cluster's folder in its title
    and a ``data-cluster`` id. Empty string without coordinates or images.
    """
    images = report.images or ()
    if coordinates is None or not len(images):
        return ""
    xy = np.asarray(coordinates, dtype=np.float64)
    if xy.shape != (len(images), 2):
        raise ValueError(f"coordinates have shape {xy.shape}, expected ({len(images)}, 2)")
    group_of = {m.path: g.id for g in report.groups for m in g.members}
    cluster_of = {m.path: (c.id, folder) for c, folder in _report_clusters(report) for m in c.members}
    pad = 12.0
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy[:, 0] - lo[0]) / span[0] * (MAP_WIDTH - 2 * pad)
    py = pad + (1.0 - (xy[:, 1] - lo[1]) / span[1]) * (MAP_HEIGHT - 2 * pad)
    order = sorted(range(len(images)), key=lambda i: group_of.get(images[i].path) is not None)
    parts = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {MAP_WIDTH} {MAP_HEIGHT}" '
        f'role="img" aria-label="Map of all {len(images)} images">'
    ]
    for i in order:
        path = images[i].path
        if cluster_of:  # a clustering report: every image coloured by its cluster
            cid, folder = cluster_of.get(path, (0, "no cluster"))
            parts.append(
                f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="4" fill="{_group_colour(cid)}" '
                f'class="pt clustered" data-path="{html.escape(path)}" data-cluster="{cid}">'
                f"<title>{html.escape(f'{os.path.basename(path)} ({folder})')}</title></circle>"
            )
            continue
        gid = group_of.get(path)
        name = os.path.basename(path)
        label = f"{name} (group {gid})" if gid is not None else f"{name} (no group)"
        colour = _group_colour(gid) if gid is not None else "#b5b5b5"
        radius = 4.5 if gid is not None else 3
        parts.append(
            f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="{radius}" fill="{colour}" '
            f'class="{"pt grouped" if gid is not None else "pt"}" data-path="{html.escape(path)}">'
            f"<title>{html.escape(label)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def member_data(member: ReportMember) -> dict[str, Any]:
    """One group member as the pages' script reads it (:file:`templates/cards.js`): path, similarity,
    size, pixels, mirror flag, evidence (``evidence``, ``inliers``, ``coverage``, ``proposed_by``,
    ``rotation``) and encoding facts (``format``, ``quality``, ``lossless``, ``derived``, ``grayscale``,
    ``recompressed``)."""
    return {
        "path": member.path,
        "sim": member.similarity_to_keep,
        "bytes": member.bytes,
        "w": member.width,
        "h": member.height,
        "mirrored": member.mirrored,
        "evidence": member.evidence,
        "inliers": member.inliers,
        "coverage": member.coverage,
        "proposed_by": list(member.proposed_by),
        "rotation": member.rotation,
        "format": member.format,
        "quality": member.quality,
        "lossless": member.lossless,
        "derived": member.derived,
        "grayscale": member.grayscale,
        "recompressed": member.recompressed,
    }


def common_folder(report: Report) -> str:
    """The folder the scanned paths share (cards show each file's folder relative to it), or ``""``."""
    folders = [p if not os.path.splitext(p)[1] else os.path.dirname(p) for p in report.paths]
    try:
        return os.path.commonpath(folders) if folders else ""
    except ValueError:
        return ""


def shared_assets() -> tuple[str, str]:
    """``(cards.js, cards.css)``: the card and viewer code the HTML report and the review page share."""
    from importlib.resources import files

    folder = files("dedup.report").joinpath("templates")
    return (
        folder.joinpath("cards.js").read_text(encoding="utf-8"),
        folder.joinpath("cards.css").read_text(encoding="utf-8"),
    )


def _header_html(report: Report) -> str:
    stats = report.stats
    extractor = extractor_label(report.extractor)
    figures = [
        ("Images found", stats["images"] + stats["skipped"]),
        ("Decoded", stats["images"]),
        ("Skipped", stats["skipped"]),
        ("Duplicate groups", stats["groups"]),
        ("Duplicate images", stats["duplicates"]),
        ("Reclaimable", human_bytes(stats["reclaimable_bytes"])),
        ("Chain splits", stats["chain_splits"]),
    ]
    clustering = report.clustering
    if clustering is not None:
        figures.append(("Clusters", clustering.get("n_clusters", len(report.clusters or ()))))
    across = stats.get("across")
    if isinstance(across, dict):
        figures.append(("Images of B with a duplicate in A", f"{across.get('b_with_duplicate_in_a')}"))
    cards = "".join(
        f'<div class="fig"><div class="v">{html.escape(str(v))}</div>'
        f'<div class="k">{html.escape(k)}</div></div>'
        for k, v in figures
    )
    scanned = html.escape(", ".join(report.paths))
    return (
        f'<div class="figs">{cards}</div><p class="muted">Scanned {scanned} with '
        f"{html.escape(extractor)}. The parameters are at the bottom of the page.</p>"
    )


def _params_html(report: Report) -> str:
    """Every parameter of the scan, as a table (shown collapsed at the bottom of the page)."""
    extractor = extractor_label(report.extractor)
    clustering = report.clustering
    params = report.params
    rows = [("Scanned", ", ".join(report.paths)), ("Extractor", extractor)]
    threshold = params.get("threshold")
    rows.append(
        ("Threshold (cosine similarity)", f"{threshold:.3f}" if isinstance(threshold, (int, float)) else "?")
    )
    for section, values in params.items():
        if isinstance(values, dict):
            rows.append((section, ", ".join(f"{k}={v}" for k, v in values.items())))
    if clustering is not None:
        how = ", ".join(f"{k}={v}" for k, v in (clustering.get("params") or {}).items())
        rows.append(("Clustering", f"{clustering.get('method')}: {how}"))
    rows.append(("Created", f"{report.created or ''} by {report.tool or 'dedup'}"))
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (
        f'<details id="params"><summary>Parameters</summary><table class="params">{table}</table></details>'
    )


def _skipped_html(report: Report) -> str:
    skipped = report.skipped
    if not skipped:
        return "<p>No files were skipped.</p>"
    reasons = report.skipped_reasons()
    summary = ", ".join(f"{html.escape(r)}: {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    rows = "".join(
        f"<tr><td>{html.escape(s.path)}</td><td>{html.escape(s.reason)}</td></tr>" for s in skipped
    )
    return (
        f'<details id="skipped"><summary>{len(skipped)} skipped files ({summary})</summary>'
        f'<table class="skipped"><thead><tr><th>File</th><th>Reason</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></details>"
    )


def to_html(
    report: Report,
    *,
    thumbnails: Mapping[str, str | None],
    coordinates: np.ndarray | None = None,
    page_size: int = PAGE_SIZE,
    cluster_page_size: int = CLUSTER_PAGE_SIZE,
    sample: int = CLUSTER_SAMPLE,
) -> str:
    """The self-contained HTML report: inline CSS/JS, thumbnails as data URIs, no network access.

    A clustering report (with ``clusters``, ``dedup group --method agglomerative|kmeans``) gets a
    "Clusters" section: one block per cluster, largest first, with its folder (``cluster-0001`` or the
    name from names.yaml), its size and a grid of its :func:`cluster_sample` (the ``sample`` members
    nearest its centre, nearest first), paged like the groups; the map is coloured by cluster, and the
    duplicate-groups section is left out when there are no groups.

    Args:
        report: the report.
        thumbnails: path -> base64 JPEG (or None for a placeholder), see :func:`make_thumbnails`;
            paths not in it get a placeholder too.
        coordinates: optional (n_images, 2) map coordinates aligned with ``report.images``
            (:func:`map_coordinates`); no map without them.
        page_size: groups per page.
        cluster_page_size: clusters per page.
        sample: thumbnails per cluster.

    Everything taken from the report is escaped (HTML text and attributes with ``html.escape``; the
    embedded JSON with ``<``, ``>``, ``&`` as ``\\u`` escapes; the page's script sets text with
    ``textContent``), so any file name is displayed as is.
    """
    from importlib.resources import files

    groups = sorted(report.groups, key=lambda g: (-len(g.members), g.id))
    thumbs = {m.path: thumbnails.get(m.path) for g in groups for m in g.members}
    data: dict[str, Any] = {
        "pageSize": max(1, int(page_size)),
        "groups": [
            {
                "id": g.id,
                "keep": g.keep,
                "members": [member_data(m) for m in g.members],
            }
            for g in groups
        ],
        "thumbs": thumbs,
        "base": common_folder(report),
    }
    clusters = []
    for c, folder in _report_clusters(report):
        members = cluster_sample(c, sample)
        thumbs.update({m.path: thumbnails.get(m.path) for m in members})
        clusters.append(
            {
                "id": c.id,
                "folder": folder,
                "name": c.name if c.named else None,
                "size": c.size,
                "colour": _group_colour(c.id),
                "sample": [{"path": m.path, "d": m.distance_to_centre} for m in members],
            }
        )
    data["clusterPageSize"] = max(1, int(cluster_page_size))
    data["clusters"] = clusters
    svg = map_svg(report, coordinates)
    map_note = (
        "Each dot is an image, placed by its features (similar images lie close together) and coloured by "
        "its cluster (the colour beside each cluster's folder below). Hover for the file name and cluster; "
        "click a dot to show its cluster."
        if clusters
        else "Each dot is an image, placed by its features (similar images lie close together); dots of one "
        "colour form a duplicate group, grey dots are in no group. Hover for the file name; click a coloured "
        "dot to show its group."
    )
    cards_js, cards_css = shared_assets()
    fields = {
        "TITLE": html.escape(f"dedup report — {', '.join(report.paths)}"),
        "HEADER": _header_html(report),
        "PARAMS": _params_html(report),
        "CARDSJS": cards_js.replace("</", "<\\/"),
        "CARDSCSS": cards_css.replace("</", ""),
        "MAP": svg or '<p class="muted">No map (no coordinates were given, or no images).</p>',
        "MAPNOTE": html.escape(map_note),
        "CLUSTERSHIDDEN": "" if clusters else " hidden",
        "GROUPSHIDDEN": " hidden" if clusters and not groups else "",
        "SAMPLE": str(max(0, int(sample))),
        "SKIPPED": _skipped_html(report),
        "DATA": _json_for_script(data),
    }
    template = files("dedup.report").joinpath("templates/report.html").read_text(encoding="utf-8")
    page = re.sub(r"\{\{([A-Z]+)\}\}", lambda m: fields[m.group(1)], template)
    # A file name that is not valid UTF-8 holds surrogate escapes: shown as U+FFFD, valid in text and JSON.
    return re.sub("[\ud800-\udfff]", "\ufffd", page)
