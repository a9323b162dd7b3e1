"""Reports of a scan: a plain dict with a stable schema (version 1), written as JSON, CSV or HTML.

The schema is documented in the README. Paths are absolute. ``members`` includes the kept image. The HTML
report is rendered from the same dict plus thumbnails and optional map coordinates
(:func:`to_html`); its page template is ``dedup/templates/report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dedup import __version__
from dedup.errors import InputError
from dedup.pipeline import ScanResult

SCHEMA_VERSION = 1
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

ProgressFn = Callable[[str, int, "int | None"], None]


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
    extra: dict[str, Any] = {}
    if result.clustering is not None:
        extra = clusters_dict(result)
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
        **extra,
    }


def cluster_folder(cluster_id: int, n_clusters: int) -> str:
    """Default folder name of a cluster: ``cluster-0001`` (zero-padded to at least 4 digits)."""
    return f"cluster-{cluster_id:0{max(4, len(str(n_clusters)))}d}"


def clusters_dict(result: ScanResult) -> dict[str, Any]:
    """The report keys of a whole-collection clustering (added only when ``result.clustering`` is set).

    ``clustering``: method, params, curve (``--clusters auto``). ``clusters``: one entry per cluster, largest
    first: ``id`` (from 1), ``name`` (folder name, ``cluster-0001`` unless renamed with names.yaml),
    ``size``, ``members`` (``path``, ``distance_to_centre`` as cosine distance, nearest first).
    """
    c = result.clustering
    if c is None:
        return {}
    k = c.n_clusters
    members: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    for i, (label, dist) in enumerate(zip(c.labels.tolist(), c.distances.tolist(), strict=True)):
        members[label].append({"path": result.images[i].path, "distance_to_centre": round(dist, 6)})
    clusters = []
    for label, ms in enumerate(members):
        ms.sort(key=lambda m: (m["distance_to_centre"], m["path"]))
        cid = label + 1
        clusters.append({"id": cid, "name": cluster_folder(cid, k), "size": len(ms), "members": ms})
    return {
        "clustering": {
            "method": c.method,
            "n_clusters": k,
            "params": c.params,
            "curve": [dict(p) for p in c.curve],
        },
        "clusters": clusters,
    }


CLUSTERS_CSV_COLUMNS = ("path", "cluster", "name", "distance_to_centre")


def clusters_csv(report: dict[str, Any]) -> str:
    """``clusters.csv``: one row per image of a clustering report: path, cluster id, cluster (folder) name,
    cosine distance to the cluster's centre."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CLUSTERS_CSV_COLUMNS)
    for cluster in report.get("clusters", []):
        for m in cluster["members"]:
            writer.writerow([m["path"], cluster["id"], cluster["name"], m["distance_to_centre"]])
    return buf.getvalue()


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


def write_report(
    report: dict[str, Any],
    path: str | Path,
    *,
    coordinates: np.ndarray | None = None,
    thumbnails: Mapping[str, str | None] | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``report`` as JSON, CSV or HTML (by extension), atomically: a reader never sees half a file.

    Args:
        report: the report dict.
        path: destination; ``.json``, ``.csv`` or ``.html``.
        coordinates: HTML only: map coordinates aligned with ``report["images"]`` (no map when omitted).
        thumbnails: HTML only: path -> base64 JPEG; made from the files of :func:`html_thumbnail_paths`
            with :func:`make_thumbnails` (reporting phase ``thumbnails`` to ``progress``) when omitted.
        progress: optional callback ``(phase, done, total)``.
    """
    p = check_destination(path)
    suffix = p.suffix.lower()
    if suffix == ".html":
        if thumbnails is None:
            max_pixels = report.get("params", {}).get("decode", {}).get("max_pixels", 178_956_970)
            thumbnails = make_thumbnails(
                html_thumbnail_paths(report), max_pixels=max_pixels, progress=progress
            )
        text = to_html(report, thumbnails=thumbnails, coordinates=coordinates)
    else:
        text = to_csv(report) if suffix == ".csv" else to_json(report)
    return write_text(p, text, what="report")


def write_clusters_csv(report: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`clusters_csv` of ``report`` to ``path`` (atomically; an existing file is replaced)."""
    return write_text(check_destination(path), clusters_csv(report), what="clusters file")


def write_text(path: str | Path, text: str, *, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file + rename).

    Raises:
        InputError: the file cannot be written (``what`` names it in the message).
    """
    p = Path(path)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else "."
        )
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, p)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {what} {p}: {e.strerror or e}") from e
    return p


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


# ------------------------------------------------------------------------------------------------- HTML

THUMBNAIL_SIZE = 160  # longest side in pixels of the thumbnails embedded in the HTML report
THUMBNAIL_QUALITY = 70  # their JPEG quality
PAGE_SIZE = 50  # groups per page of the HTML report
CLUSTER_PAGE_SIZE = 20  # clusters per page of the HTML report
CLUSTER_SAMPLE = 12  # thumbnails per cluster in the HTML report: the members nearest the cluster's centre
TSNE_EXACT_MAX = 200  # exact t-SNE up to this many images, Barnes-Hut above
TSNE_MAX_IMAGES = 5000  # map_coordinates uses t-SNE up to this many images, PCA above (t-SNE gets slow)
MAP_WIDTH, MAP_HEIGHT = 960, 540  # SVG user units of the collection map


def map_coordinates(vectors: np.ndarray, *, method: str = "auto", random_state: int = 0) -> np.ndarray:
    """2-D coordinates of feature vectors for the collection map of the HTML report.

    Args:
        vectors: float array of shape (n_images, dim), e.g. ``ScanResult.embeddings.vectors``.
        method: ``"tsne"`` (scikit-learn's Barnes-Hut t-SNE, cosine metric, PCA initialisation),
            ``"pca"``, or ``"auto"``: t-SNE up to :data:`TSNE_MAX_IMAGES` images, PCA above.
        random_state: seed; equal inputs give equal maps.

    Returns:
        float64 array of shape (n_images, 2); all zeros for fewer than 3 images or identical vectors.
    """
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"method must be auto, tsne or pca, not {method!r}")
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n < 3 or x.ndim != 2 or np.allclose(x, x[0]):
        return np.zeros((n, 2), dtype=np.float64)
    if method == "pca" or (method == "auto" and n > TSNE_MAX_IMAGES) or n < 5:
        from sklearn.decomposition import PCA

        out = PCA(n_components=min(2, x.shape[1]), random_state=random_state).fit_transform(x)
        if out.shape[1] < 2:
            out = np.hstack([out, np.zeros((n, 1))])
        return np.asarray(out, dtype=np.float64)
    from sklearn.manifold import TSNE

    tsne = TSNE(
        n_components=2,
        perplexity=float(min(30.0, (n - 1) / 3)),
        metric="cosine",
        init="pca",
        learning_rate="auto",
        random_state=random_state,
        # Barnes-Hut is the fast approximation for large n but pathologically slow for a few dozen points
        # (measured: 32 images 3.9 s vs 0.2 s exact; 300 images 2.8 s vs 3.2 s)
        method="exact" if n <= TSNE_EXACT_MAX else "barnes_hut",
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def thumbnail(path: str, *, size: int = THUMBNAIL_SIZE, max_pixels: int = 178_956_970) -> str | None:
    """A JPEG thumbnail (longest side ``size``) of one image as base64 text, or None if it cannot be read.

    Decoding goes through :func:`dedup.images.open_image` (EXIF orientation, CMYK, 16-bit, ... handled);
    a file that vanished or broke since the scan gives None (the report shows a placeholder).
    """
    from PIL import Image

    from dedup.errors import ImageError
    from dedup.images import open_image

    try:
        image, _, _ = open_image(path, max_pixels=max_pixels, draft_size=size)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    except (ImageError, OSError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_thumbnails(
    paths: Sequence[str],
    *,
    size: int = THUMBNAIL_SIZE,
    max_pixels: int = 178_956_970,
    progress: ProgressFn | None = None,
) -> dict[str, str | None]:
    """:func:`thumbnail` of each path (decoded in worker threads): path -> base64 JPEG or None."""
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(paths))
    out: dict[str, str | None] = {}
    if progress:
        progress("thumbnails", 0, len(unique))
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dedup-thumb") as pool:
        for done, (path, thumb) in enumerate(
            zip(
                unique,
                pool.map(lambda p: thumbnail(p, size=size, max_pixels=max_pixels), unique),
                strict=True,
            ),
            start=1,
        ):
            out[path] = thumb
            if progress and (done % 50 == 0 or done == len(unique)):
                progress("thumbnails", done, len(unique))
    return out


def cluster_sample(cluster: Mapping[str, Any], size: int = CLUSTER_SAMPLE) -> list[dict[str, Any]]:
    """The ``size`` members of a report cluster nearest its centre (by ``distance_to_centre``, then path):
    the most typical images, which the HTML report shows as the cluster's sample grid."""
    members = [m for m in cluster.get("members") or [] if isinstance(m, Mapping) and "path" in m]
    members.sort(key=lambda m: (float(m.get("distance_to_centre", float("inf"))), str(m["path"])))
    return [dict(m) for m in members[: max(0, size)]]


def html_thumbnail_paths(report: Mapping[str, Any], *, sample: int = CLUSTER_SAMPLE) -> list[str]:
    """The images the HTML report shows as thumbnails: every duplicate-group member, plus the
    :func:`cluster_sample` of each cluster of a clustering report (at most ``sample`` per cluster, so the
    thumbnail work is bounded by groups + ``sample`` x clusters, not by the collection size)."""
    paths = [m["path"] for g in report.get("groups") or [] for m in g["members"]]
    for cluster in report.get("clusters") or []:
        paths.extend(m["path"] for m in cluster_sample(cluster, sample))
    return list(dict.fromkeys(paths))


def _report_clusters(report: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """``(cluster, folder)`` of each cluster of a clustering report, largest first (ties by id); ``[]``
    without clusters. The folder is the one ``dedup group`` places the cluster in: ``cluster-0001`` or the
    sanitised name given in names.yaml (:func:`dedup.actions.cluster_folders`, in report order)."""
    from dedup.actions import cluster_folders

    clusters = report.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        return []
    folders, _ = cluster_folders(clusters)
    pairs = list(zip(clusters, folders, strict=True))
    pairs.sort(key=lambda cf: (-int(cf[0].get("size", len(cf[0].get("members") or []))), int(cf[0]["id"])))
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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _group_colour(group_id: int) -> str:
    """A distinct-looking colour per group (golden-angle hues)."""
    return f"hsl({(group_id * 137.508) % 360:.1f},70%,42%)"


def map_svg(report: dict[str, Any], coordinates: np.ndarray | None) -> str:
    """The collection map: an inline SVG scatter of ``report["images"]`` at ``coordinates``.

    Points are coloured by group (images in no group grey, drawn first); each has a ``<title>`` with its
    file name (and group) and a ``data-path`` the page uses to filter on click. In a clustering report
    (``clusters`` key) every point is coloured by its cluster instead, with the cluster's folder in its title
    and a ``data-cluster`` id. Empty string without coordinates or images.
    """
    images = report.get("images") or []
    if coordinates is None or not len(images):
        return ""
    xy = np.asarray(coordinates, dtype=np.float64)
    if xy.shape != (len(images), 2):
        raise ValueError(f"coordinates have shape {xy.shape}, expected ({len(images)}, 2)")
    group_of = {m["path"]: g["id"] for g in report["groups"] for m in g["members"]}
    cluster_of = {
        m["path"]: (int(c["id"]), folder) for c, folder in _report_clusters(report) for m in c["members"]
    }
    pad = 12.0
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy[:, 0] - lo[0]) / span[0] * (MAP_WIDTH - 2 * pad)
    py = pad + (1.0 - (xy[:, 1] - lo[1]) / span[1]) * (MAP_HEIGHT - 2 * pad)
    order = sorted(range(len(images)), key=lambda i: group_of.get(images[i]["path"]) is not None)
    parts = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {MAP_WIDTH} {MAP_HEIGHT}" '
        f'role="img" aria-label="Map of all {len(images)} images">'
    ]
    for i in order:
        path = images[i]["path"]
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


def _header_html(report: dict[str, Any]) -> str:
    stats = report["stats"]
    ex = report.get("extractor", {})
    extractor = str(ex.get("name", "?"))
    if ex.get("fallback_used"):
        extractor += f" (fallback for {ex.get('requested')})"
    figures = [
        ("Images found", stats["images"] + stats["skipped"]),
        ("Decoded", stats["images"]),
        ("Skipped", stats["skipped"]),
        ("Duplicate groups", stats["groups"]),
        ("Duplicate images", stats["duplicates"]),
        ("Reclaimable", _human_bytes(stats["reclaimable_bytes"])),
        ("Chain splits", stats["chain_splits"]),
    ]
    clustering = report.get("clustering")
    if isinstance(clustering, Mapping):
        figures.append(("Clusters", clustering.get("n_clusters", len(report.get("clusters") or []))))
    cards = "".join(
        f'<div class="fig"><div class="v">{html.escape(str(v))}</div>'
        f'<div class="k">{html.escape(k)}</div></div>'
        for k, v in figures
    )
    params = report.get("params", {})
    rows = [("Scanned", ", ".join(report.get("paths", []))), ("Extractor", extractor)]
    rows.append(("Threshold (cosine similarity)", f"{params.get('threshold', float('nan')):.3f}"))
    for section, values in params.items():
        if isinstance(values, dict):
            rows.append((section, ", ".join(f"{k}={v}" for k, v in values.items())))
    if isinstance(clustering, Mapping):
        how = ", ".join(f"{k}={v}" for k, v in (clustering.get("params") or {}).items())
        rows.append(("Clustering", f"{clustering.get('method')}: {how}"))
    rows.append(("Created", f"{report.get('created', '')} by {report.get('tool', 'dedup')}"))
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<div class="figs">{cards}</div><table class="params">{table}</table>'


def _skipped_html(report: dict[str, Any]) -> str:
    skipped = report.get("skipped") or []
    if not skipped:
        return "<p>No files were skipped.</p>"
    reasons = skipped_reasons(report)
    summary = ", ".join(f"{html.escape(r)}: {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    rows = "".join(
        f"<tr><td>{html.escape(s['path'])}</td><td>{html.escape(s['reason'])}</td></tr>" for s in skipped
    )
    return (
        f'<details id="skipped"><summary>{len(skipped)} skipped files ({summary})</summary>'
        f'<table class="skipped"><thead><tr><th>File</th><th>Reason</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></details>"
    )


def to_html(
    report: dict[str, Any],
    *,
    thumbnails: Mapping[str, str | None],
    coordinates: np.ndarray | None = None,
    page_size: int = PAGE_SIZE,
    cluster_page_size: int = CLUSTER_PAGE_SIZE,
    sample: int = CLUSTER_SAMPLE,
) -> str:
    """The self-contained HTML report: inline CSS/JS, thumbnails as data URIs, no network access.

    A clustering report (``clusters`` key, ``dedup group --method agglomerative|kmeans``) gets a
    "Clusters" section: one block per cluster, largest first, with its folder (``cluster-0001`` or the
    name from names.yaml), its size and a grid of its :func:`cluster_sample` (the ``sample`` members
    nearest its centre, nearest first), paged like the groups; the map is coloured by cluster, and the
    duplicate-groups section is left out when there are no groups.

    Args:
        report: the report dict (:func:`to_dict` or :func:`load_report`).
        thumbnails: path -> base64 JPEG (or None for a placeholder), see :func:`make_thumbnails`;
            paths not in it get a placeholder too.
        coordinates: optional (n_images, 2) map coordinates aligned with ``report["images"]``
            (:func:`map_coordinates`); no map without them.
        page_size: groups per page.
        cluster_page_size: clusters per page.
        sample: thumbnails per cluster.

    Everything taken from the report is escaped (HTML text and attributes with ``html.escape``; the
    embedded JSON with ``<``, ``>``, ``&`` as ``\\u`` escapes; the page's script sets text with
    ``textContent``), so any file name is displayed as is.
    """
    from importlib.resources import files

    groups = sorted(report["groups"], key=lambda g: (-len(g["members"]), g["id"]))
    thumbs = {m["path"]: thumbnails.get(m["path"]) for g in groups for m in g["members"]}
    data: dict[str, Any] = {
        "pageSize": max(1, int(page_size)),
        "groups": [
            {
                "id": g["id"],
                "keep": g["keep"],
                "members": [
                    {
                        "path": m["path"],
                        "sim": m["similarity_to_keep"],
                        "bytes": m["bytes"],
                        "w": m["width"],
                        "h": m["height"],
                        "mirrored": bool(m.get("mirrored", False)),
                    }
                    for m in g["members"]
                ],
            }
            for g in groups
        ],
        "thumbs": thumbs,
    }
    clusters = []
    for c, folder in _report_clusters(report):
        members = cluster_sample(c, sample)
        thumbs.update({m["path"]: thumbnails.get(m["path"]) for m in members})
        clusters.append(
            {
                "id": int(c["id"]),
                "folder": folder,
                "name": str(c["name"]) if c.get("named") and c.get("name") is not None else None,
                "size": int(c.get("size", len(c["members"]))),
                "colour": _group_colour(int(c["id"])),
                "sample": [{"path": m["path"], "d": m.get("distance_to_centre")} for m in members],
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
    fields = {
        "TITLE": html.escape(f"dedup report — {', '.join(report.get('paths', []))}"),
        "HEADER": _header_html(report),
        "MAP": svg or '<p class="muted">No map (no coordinates were given, or no images).</p>',
        "MAPNOTE": html.escape(map_note),
        "CLUSTERSHIDDEN": "" if clusters else " hidden",
        "GROUPSHIDDEN": " hidden" if clusters and not groups else "",
        "SAMPLE": str(max(0, int(sample))),
        "SKIPPED": _skipped_html(report),
        "DATA": _json_for_script(data),
    }
    template = files("dedup").joinpath("templates/report.html").read_text(encoding="utf-8")
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: fields[m.group(1)], template)
