"""Helpers of the review tests: a folder of four duplicate groups, a review server in a thread, raw HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from dedup.config import load_config
from dedup.ignore import IgnoreList
from dedup.pipeline import find_duplicates
from dedup.report import from_result
from dedup.report.files import write_report
from dedup.review.server import ReviewServer
from dedup.review.state import ReviewState

from imagegen import make_photo

#: The scan keeps the first path of each group (keep.policy path), so "Keep best" has work to do.
SCAN = {"features.extractor": "phash", "keep.policy": "path"}


def write_review_folder(root: Path) -> dict[str, list[str]]:
    """Four groups (3, 4, 2 and 3 images, in sub-folders g1..g4) whose first path is a worse copy, and one
    single image. Returns group name -> paths (best copy first)."""
    groups: dict[str, list[str]] = {}
    specs = {
        "g1": [("b_orig.jpg", 92, 1.0, False), ("a_low.jpg", 40, 1.0, False), ("c_half.jpg", 90, 0.5, False)],
        "g2": [
            ("b_orig.jpg", 92, 1.0, False),
            ("a_q50.jpg", 50, 1.0, False),
            ("c_q70.jpg", 70, 1.0, False),
            ("d_flip.jpg", 85, 1.0, True),
        ],
        "g3": [("b_orig.jpg", 95, 1.0, False), ("a_q30.jpg", 30, 1.0, False)],
        "g4": [
            ("b_orig.jpg", 93, 1.0, False),
            ("a_small.jpg", 90, 0.6, False),
            ("c_q45.jpg", 45, 1.0, False),
        ],
    }
    for k, (name, members) in enumerate(specs.items()):
        photo = make_photo(300 + 7 * k, size=(320, 240))
        folder = root / name
        folder.mkdir(parents=True)
        paths = []
        for file, quality, scale, flip in members:
            image = ImageOps.mirror(photo) if flip else photo
            if scale != 1.0:
                image = image.resize((int(320 * scale), int(240 * scale)), Image.Resampling.LANCZOS)
            image.save(folder / file, quality=quality)
            paths.append(str(folder / file))
        groups[name] = paths
    make_photo(999).save(root / "single.jpg", quality=90)
    return groups


def scan_folder(tmp_path: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """``(photos folder, scan.json, group name -> paths)``: the folder scanned with :data:`SCAN`."""
    root = tmp_path / "photos"
    groups = write_review_folder(root)
    report = from_result(find_duplicates([root], load_config(overrides=SCAN)))
    assert sorted(len(g.members) for g in report.groups) == [2, 3, 3, 4], report.groups
    path = write_report(report, tmp_path / "scan.json")
    return root, path, groups


def open_state(report: Path, **kwargs: Any) -> ReviewState:
    return ReviewState.open(report, ignore=IgnoreList.from_config(load_config()), **kwargs)


@contextmanager
def running(report: Path, **kwargs: Any) -> Iterator[ReviewServer]:
    """A review server of ``report`` on a free loopback port, in a thread; stopped afterwards."""
    state = open_state(report)
    server = ReviewServer(state, load_config(), quarantine=report.parent / "quarantine", **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def request(
    server: ReviewServer | str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request; ``path`` is sent exactly as given (no normalisation, no encoding)."""
    base = server.base_url if isinstance(server, ReviewServer) else server
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def token_header(server: ReviewServer) -> dict[str, str]:
    return {"X-Dedup-Token": server.token}
