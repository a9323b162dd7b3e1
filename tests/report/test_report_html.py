"""The HTML report: escaping, thumbnails, the map, and (marked ``browser``) headless Chromium checks."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup import actions
from dedup.config import load_config
from dedup.pipeline import cluster_collection, find_duplicates
from dedup.report import Report, from_result
from dedup.report import files as report_files
from dedup.report import html as report_html
from dedup.report.files import write_report
from dedup.report.schema import cluster_folder, sanitize_folder_name

from helpers import CHROMEDRIVER, console_errors, skip_or_fail_without_browser, tree_state
from imagegen import make_photo, write_families

NASTY = "a <b>&amp; \"q\" 's' </script><script>alert(1)</script>"


def _data_block(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="dedup-data">(.*?)</script>', page, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def nasty_scan(tmp_path_factory):
    """Three groups of two whose file and folder names contain HTML/JS metacharacters, plus a single."""
    root = tmp_path_factory.mktemp("html") / f"dir {NASTY.replace('/', '_')}"
    root.mkdir()
    for seed in (1, 2, 3):
        photo = make_photo(seed)
        photo.save(root / f"{seed} {NASTY.replace('/', '_')}.jpg", quality=92)
        photo.save(root / f"{seed}_copy & <copy>.jpg", quality=60)
    make_photo(99).save(root / "single.jpg", quality=90)
    (root / "broken <x>.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = find_duplicates([root], load_config(None, {"features.extractor": "phash"}))
    return root, result


def test_html_is_self_contained_and_escapes_everything(nasty_scan, tmp_path):
    root, result = nasty_scan
    data = _dict(result)
    assert data["stats"]["groups"] == 3
    out = write_report(
        Report.from_dict(data),
        tmp_path / "r.html",
        coordinates=report_html.map_coordinates(result.embeddings.vectors),
    )
    page = out.read_text(encoding="utf-8")
    # nothing from the report can end an element or open a tag
    assert "<script>alert(1)" not in page and "<b>" not in page
    assert page.count("<script") == 2  # the JSON data block and the page's own script
    assert html.escape(str(root)) in page  # header shows the scanned folder, escaped
    assert "broken &lt;x&gt;.jpg" in page  # skipped list, escaped, with its reason
    # no network: no http(s) URL is loaded, only data: URIs
    assert not re.search(r'(src|href)="https?:', page)
    assert "@import" not in page and "url(http" not in page
    block = _data_block(page)
    assert [len(g["members"]) for g in block["groups"]] == [2, 2, 2]
    paths = {m["path"] for g in block["groups"] for m in g["members"]}
    assert paths == {m["path"] for g in data["groups"] for m in g["members"]}  # round-trips exactly
    assert all(block["thumbs"][p] for p in paths)
    thumb = Image.open(io.BytesIO(base64.b64decode(next(iter(block["thumbs"].values())))))
    assert thumb.format == "JPEG" and max(thumb.size) == report_html.THUMBNAIL_SIZE
    # the map: one point per decoded image, grouped ones coloured, titles escaped
    assert page.count("<circle") == data["stats"]["images"] == 7
    assert page.count('class="pt grouped"') == 6
    assert html.escape(f"1 {NASTY.replace('/', '_')}.jpg (group") in page  # a map title


def test_vanished_image_gets_a_placeholder(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    photo = make_photo(5)
    photo.save(root / "a.jpg", quality=95)
    photo.save(root / "b.jpg", quality=50)
    data = _dict(find_duplicates([root], load_config(None, {"features.extractor": "phash"})))
    (root / "b.jpg").unlink()  # gone since the scan
    (root / "a.jpg").write_bytes(b"garbage")  # or broken since the scan
    out = write_report(Report.from_dict(data), tmp_path / "r.html")  # thumbnails made from the files
    block = _data_block(out.read_text(encoding="utf-8"))
    assert block["thumbs"] == {str(root / "a.jpg"): None, str(root / "b.jpg"): None}
    assert "image not available" in out.read_text(encoding="utf-8")


def test_thumbnail_applies_exif_orientation(tmp_path):
    from imagegen import save_with_orientation

    display = Image.new("RGB", (300, 100), (200, 30, 30))
    save_with_orientation(display, tmp_path / "rot.jpg", orientation=6)
    thumb = report_html.thumbnail(str(tmp_path / "rot.jpg"))
    assert thumb is not None
    assert Image.open(io.BytesIO(base64.b64decode(thumb))).size == (160, 53)  # landscape, as displayed


def test_map_coordinates_tsne_pca_and_small_inputs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    x = np.concatenate([c + 0.01 * rng.normal(size=(10, 16)) for c in centres])
    a = report_html.map_coordinates(x)
    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, report_html.map_coordinates(x))  # fixed random_state
    # t-SNE keeps the three clusters apart: each point's nearest neighbour is in its own cluster
    d = np.linalg.norm(a[:, None] - a[None], axis=2) + np.eye(30) * 1e9
    assert (d.argmin(axis=1) // 10 == np.arange(30) // 10).all()
    p = report_html.map_coordinates(x, method="pca")
    assert p.shape == (30, 2)
    assert report_html.map_coordinates(np.zeros((0, 4))).shape == (0, 2)
    assert report_html.map_coordinates(np.ones((1, 4))).tolist() == [[0.0, 0.0]]
    assert report_html.map_coordinates(np.ones((6, 4))).tolist() == [[0.0, 0.0]] * 6  # identical vectors
    with pytest.raises(ValueError):
        report_html.map_coordinates(x, method="umap")


def test_above_the_sample_size_tsne_sees_only_the_sample_and_duplicates_land_together(monkeypatch):
    import sklearn.manifold

    seen: list[int] = []
    real = sklearn.manifold.TSNE

    class Spy(real):  # type: ignore[misc, valid-type]
        def fit_transform(self, x, *args, **kwargs):
            seen.append(len(x))
            return super().fit_transform(x, *args, **kwargs)

    monkeypatch.setattr(report_html, "TSNE_SAMPLE", 40)
    monkeypatch.setattr(sklearn.manifold, "TSNE", Spy)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 64))
    x = np.concatenate([c + 0.02 * rng.normal(size=(30, 64)) for c in centres])  # 4 groups of 30 images
    calls: list[tuple[int, int | None]] = []
    xy = report_html.map_coordinates(x, progress=lambda phase, done, total: calls.append((done, total)))
    assert seen == [40] and xy.shape == (120, 2) and np.isfinite(xy).all()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(120) * 1e9
    assert (d.argmin(axis=1) // 30 == np.arange(120) // 30).all()  # placed beside their own group
    assert calls[0] == (0, 120) and calls[-1] == (120, 120)


def test_scan_cli_writes_html_with_json_and_csv(cli, nasty_scan, tmp_path):
    root, _ = nasty_scan
    out_html, out_json = tmp_path / "r.html", tmp_path / "r.json"
    result = cli(
        "scan", str(root), "--features", "phash", "--report", str(out_html), "--report", str(out_json)
    )
    assert result.exit_code == 0, result.output
    assert f"Report written to {out_html}" in result.stdout.replace("\n", "")
    report = json.loads(out_json.read_text())
    block = _data_block(out_html.read_text(encoding="utf-8"))
    assert len(block["groups"]) == report["stats"]["groups"] == 3
    assert out_html.read_text(encoding="utf-8").count("<circle") == report["stats"]["images"]


def test_unknown_report_format_is_still_an_error(cli, tmp_path):
    result = cli("scan", str(tmp_path), "--report", str(tmp_path / "r.pdf"))
    assert result.exit_code == 1
    assert ".json, .csv, .html" in result.stderr


def synthetic_report(n_groups: int, root: str = "/nonexistent/dedup-html-test") -> dict[str, Any]:
    """A schema-1 report with ``n_groups`` groups of 2-4 members whose files do not exist (placeholders)."""
    rng = np.random.default_rng(7)
    groups, images = [], []
    for g in range(n_groups):
        members = []
        for j in range(2 + int(rng.integers(0, 3))):
            path = f"{root}/folder{g % 97}/img{g:05d}_{j}.jpg"
            members.append(
                {
                    "path": path,
                    "similarity_to_keep": 1.0 if j == 0 else round(float(rng.uniform(0.9, 1.0)), 6),
                    "bytes": int(rng.integers(1000, 10**6)),
                    "width": 640,
                    "height": 480,
                    "mtime": 1.7e9,
                    "mirrored": j == 2,
                }
            )
            images.append({"path": path, "bytes": 1, "mtime": 1.7e9, "width": 640, "height": 480})
        groups.append({"id": g + 1, "keep": members[0]["path"], "members": members})
    groups.sort(key=lambda g: -len(g["members"]))
    return {
        "version": 1,
        "tool": "dedup test",
        "created": "2026-01-01T00:00:00+00:00",
        "paths": [root],
        "extractor": {"name": "phash", "fallback_used": False},
        "params": {"threshold": 0.7, "decode": {"max_pixels": 1000}},
        "stats": {
            "images": len(images),
            "skipped": 1,
            "groups": n_groups,
            "duplicates": len(images) - n_groups,
            "reclaimable_bytes": 123,
            "chain_splits": 0,
        },
        "groups": groups,
        "skipped": [{"path": f"{root}/bad.jpg", "reason": "truncated image"}],
        "images": images,
    }


def synthetic_clusters_report(n_clusters: int, root: str = "/nonexistent/dedup-html-test") -> dict[str, Any]:
    """A clustering report (no duplicate groups) of ``n_clusters`` clusters of 1-40 members whose files do
    not exist; members are listed in random order, not by distance."""
    rng = np.random.default_rng(11)
    data = synthetic_report(0, root)
    sizes = sorted((int(rng.integers(1, 41)) for _ in range(n_clusters)), reverse=True)
    clusters, images = [], []
    for c, size in enumerate(sizes, start=1):
        members = [
            {
                "path": f"{root}/c{c:04d}/img{j:02d}.jpg",
                "distance_to_centre": round(float(rng.uniform(0, 0.5)), 6),
            }
            for j in range(size)
        ]
        images += [
            {"path": m["path"], "bytes": 1, "mtime": 1.7e9, "width": 64, "height": 48} for m in members
        ]
        clusters.append({"id": c, "name": cluster_folder(c, n_clusters), "size": size, "members": members})
    data["images"] = images
    data["stats"]["images"] = len(images)
    data["clustering"] = {"method": "kmeans", "n_clusters": n_clusters, "params": {"n_clusters": n_clusters}}
    data["clusters"] = clusters
    return data


def _dict(result: Any) -> dict[str, Any]:
    """The JSON form of a scan's report."""
    return from_result(result).to_dict()


# ------------------------------------------------------------------------------------------ clusters


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """kmeans with 3 clusters on three generated photo families of 6, 5 and 4 images (phash features)."""
    root = tmp_path_factory.mktemp("clusters") / "photos"
    write_families(root)
    cfg = load_config(
        overrides={"features.extractor": "phash", "group.method": "kmeans", "group.clusters": 3}
    )
    return root, cluster_collection(find_duplicates([root], cfg), cfg)


def test_cluster_blocks_sample_by_distance_and_escaped_names(clustered, tmp_path):
    root, result = clustered
    named, _ = actions.with_names(from_result(result), {2: NASTY})
    data = named.to_dict()
    for c in data["clusters"]:  # the page must order the sample itself, whatever order the report has
        c["members"].reverse()
    out = write_report(
        Report.from_dict(data),
        tmp_path / "r.html",
        coordinates=report_html.map_coordinates(result.embeddings.vectors),
    )
    page = out.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<b>" not in page
    assert page.count("<script") == 2
    block = _data_block(page)
    clusters = block["clusters"]
    nasty_folder = sanitize_folder_name(NASTY)
    assert [c["id"] for c in clusters] == [1, 2, 3] and [c["size"] for c in clusters] == [6, 5, 4]
    assert [c["folder"] for c in clusters] == ["cluster-0001", nasty_folder, "cluster-0003"]
    assert clusters[1]["name"] == NASTY and clusters[0]["name"] is None  # the user's name, exactly
    for shown, cluster in zip(clusters, data["clusters"], strict=True):
        nearest = sorted(cluster["members"], key=lambda m: (m["distance_to_centre"], m["path"]))
        assert [m["path"] for m in shown["sample"]] == [m["path"] for m in nearest]
        assert [m["d"] for m in shown["sample"]] == sorted(m["d"] for m in shown["sample"])
    assert set(block["thumbs"]) == set(report_html.html_thumbnail_paths(Report.from_dict(data)))
    assert all(block["thumbs"].values())  # thumbnails made from the files
    assert 'id="clusters-section" hidden' not in page
    assert "Clusters</div>" in page  # the header's figure
    # the map: one dot per image, coloured by cluster, the cluster's (escaped) folder in its title
    assert page.count('class="pt clustered"') == len(result.images) == 15
    cluster_of = {m["path"]: c["id"] for c in data["clusters"] for m in c["members"]}
    assert Counter(re.findall(r'data-cluster="(\d+)"', page)) == Counter(map(str, cluster_of.values()))
    assert html.escape(f"({nasty_folder})") in page


def test_cluster_sample_is_bounded_and_groups_section_hidden(monkeypatch, tmp_path):
    data = synthetic_clusters_report(30)
    expected = [min(report_html.CLUSTER_SAMPLE, c["size"]) for c in data["clusters"]]
    assert max(c["size"] for c in data["clusters"]) > report_html.CLUSTER_SAMPLE
    made: list[str] = []

    def fake_thumbnails(paths, **kwargs):
        made.extend(paths)
        return dict.fromkeys(paths)

    monkeypatch.setattr(report_files, "make_thumbnails", fake_thumbnails)
    page = write_report(Report.from_dict(data), tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(made) == sum(expected)  # thumbnails only for the sampled members
    block = _data_block(page)
    assert [len(c["sample"]) for c in block["clusters"]] == expected
    for shown, cluster in zip(block["clusters"], data["clusters"], strict=True):
        assert [m["d"] for m in shown["sample"]] == sorted(
            m["distance_to_centre"] for m in cluster["members"]
        )[: len(shown["sample"])]
    assert set(made) == set(block["thumbs"])
    assert 'id="groups-section" hidden' in page and 'id="clusters-section" hidden' not in page
    assert 'id="map"' not in page  # no coordinates given
    plain = report_html.to_html(
        Report.from_dict(synthetic_report(3)), thumbnails={}
    )  # a scan: no clusters section
    assert 'id="clusters-section" hidden' in plain and 'id="groups-section" hidden' not in plain
    assert _data_block(plain)["clusters"] == []


def _group(cli, *args: Any) -> Any:
    return cli("group", *map(str, args))


def test_group_kmeans_cli_writes_the_cluster_report_and_undo_leaves_it(cli, tmp_path):
    root = tmp_path / "photos"
    write_families(root)
    before = tree_state(root)
    out = tmp_path / "sorted"
    r_html, r_json = tmp_path / "r.html", out / "r.json"  # one outside the output folder, one inside
    result = _group(cli,
        root, "--to", out, "--method", "kmeans", "--clusters", "3", "-f", "phash",
        "--report", r_html, "--report", r_json,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stdout = result.stdout.replace("\n", "")
    assert f"Report written to {r_html}" in stdout and f"Report written to {r_json}" in stdout
    report = json.loads(r_json.read_text())
    page = r_html.read_text(encoding="utf-8")
    block = _data_block(page)
    assert [c["size"] for c in block["clusters"]] == [c["size"] for c in report["clusters"]] == [6, 5, 4]
    assert [c["folder"] for c in block["clusters"]] == sorted(p.name for p in out.iterdir() if p.is_dir())
    for shown, cluster in zip(block["clusters"], report["clusters"], strict=True):
        assert [m["path"] for m in shown["sample"]] == [m["path"] for m in cluster["members"]]
    assert len(block["thumbs"]) == 15 and all(block["thumbs"].values())
    assert page.count('class="pt clustered"') == report["stats"]["images"] == 15
    (manifest,) = out.glob("dedup-group-*.jsonl")
    undone = cli("undo", str(manifest))
    assert undone.exit_code == 0, undone.output
    # undo removes what the run placed; the report stays, like clusters.csv and names.yaml
    assert sorted(os.listdir(out)) == sorted(["clusters.csv", "names.yaml", "r.json", manifest.name])
    assert tree_state(root) == before


def test_group_report_destinations_are_checked_before_the_scan(cli, tmp_path):
    root = tmp_path / "photos"
    write_families(root, sizes=(2, 2))
    out = tmp_path / "sorted"
    names = tmp_path / "names.yaml"
    names.write_text('1: "R.html"\n')
    cases = [
        (["--report", out / "cluster-0001" / "r.html"], "subfolder of the output folder"),
        (["--report", out / "clusters.csv"], "would collide with clusters.csv"),
        (["--report", out / "r.html", "--names", names], "would collide with r.html"),
        (["--report", out / "r.html", "--dry-run"], "--dry-run creates nothing"),
        (["--report", out], "is the output folder"),
        (["--report", tmp_path / "r.pdf"], "unsupported format"),
    ]
    for args, needle in cases:
        result = _group(cli, root, "--to", out, "-m", "kmeans", "-k", "2", "-f", "phash", *args)
        assert result.exit_code == 1, (args, result.output)
        assert needle in result.stderr.replace("\n", ""), (args, result.stderr)
        assert "kmeans:" not in result.stderr  # refused before scanning
        assert not out.exists()
    # dbscan grouping also checks (no cluster files, but still no subfolder of the output folder)
    result = _group(cli, root, "--to", out, "-f", "phash", "--report", out / "unique" / "r.json")
    assert result.exit_code == 1 and "subfolder" in result.stderr


def test_group_dry_run_writes_only_the_report(cli, tmp_path):
    root = tmp_path / "photos"
    write_families(root, sizes=(3, 3))
    before = tree_state(tmp_path)
    r_html = tmp_path / "preview.html"
    result = _group(
        cli, root, "--to", tmp_path / "o", "-m", "kmeans", "-k", "2", "-f", "phash", "--dry-run", "-r", r_html
    )
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # stdout is still the plan as JSON
    assert "Report written to" in result.stderr.replace("\n", "")
    assert [c["size"] for c in _data_block(r_html.read_text(encoding="utf-8"))["clusters"]] == [3, 3]
    after = tree_state(tmp_path)
    assert {k: v for k, v in after.items() if k != "preview.html"} == before


def test_dbscan_group_report_shows_the_groups(cli, tmp_path):
    root = tmp_path / "photos"
    write_families(root, sizes=(3, 2))
    out = tmp_path / "g"
    out.mkdir()
    result = _group(
        cli, root, "--to", out, "-f", "phash", "--report", out / "dups.html", "--report", out / "dups.json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "dups.json").read_text())
    page = (out / "dups.html").read_text(encoding="utf-8")
    block = _data_block(page)
    assert block["clusters"] == [] and len(block["groups"]) == report["stats"]["groups"]
    assert page.count("<circle") == report["stats"]["images"] == 5
    (manifest,) = out.glob("dedup-group-*.jsonl")
    assert cli("undo", str(manifest)).exit_code == 0
    assert sorted(os.listdir(out)) == sorted(["dups.html", "dups.json", manifest.name])


# ------------------------------------------------------------------------------------------ real browser


def test_missing_browser_skips_locally_but_fails_in_ci(monkeypatch, tmp_path):
    absent = str(tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-chromium"):
        skip_or_fail_without_browser(absent, CHROMEDRIVER)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        skip_or_fail_without_browser(absent, CHROMEDRIVER)


def _count(driver, css: str) -> int:
    return int(driver.execute_script(f"return document.querySelectorAll({json.dumps(css)}).length"))


def _type_filter(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(text)
    want = text.lower()
    WebDriverWait(driver, 10).until(
        lambda d: (
            d.execute_script(
                "var q = arguments[0]; var s = document.querySelectorAll('#groups section.group');"
                "return Array.prototype.every.call(s, function (g) {"
                "  return Array.prototype.some.call(g.querySelectorAll('figure'), function (f) {"
                "    return f.getAttribute('data-path').toLowerCase().indexOf(q) !== -1; }); })"
                " && document.getElementById('page-info').textContent.indexOf('filtered') !== -1",
                want,
            )
            if text
            else True
        )
    )


@pytest.mark.browser
def test_report_in_headless_chromium(cli, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from imagegen import write_dataset

    truth = write_dataset(tmp_path / "data")
    out_html, out_json = tmp_path / "report.html", tmp_path / "report.json"
    result = cli(
        "scan",
        truth["root"],
        "--features",
        "phash",
        "--report",
        str(out_html),
        "--report",
        str(out_json),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["stats"]["groups"] >= 2

    browser.get(out_html.resolve().as_uri())
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert console_errors(browser) == []
    n_members = sum(len(g["members"]) for g in report["groups"])
    assert _count(browser, "#groups section.group") == report["stats"]["groups"]
    assert _count(browser, "#groups figure.thumb") == n_members
    assert _count(browser, "#groups figure.thumb img") == n_members  # every thumbnail decoded
    assert _count(browser, "#groups figure.thumb.kept") == report["stats"]["groups"]
    assert _count(browser, "#groups .badge.mirrored") == sum(
        m["mirrored"] for g in report["groups"] for m in g["members"]
    )
    # images really decode in the browser (a broken data URI has naturalWidth 0)
    widths = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#groups img'),"
        " function (i) { return i.complete ? i.naturalWidth : -1; })"
    )
    assert all(w > 0 for w in widths), widths
    assert _count(browser, "#map circle") == report["stats"]["images"]
    assert _count(browser, "#skipped tbody tr") == report["stats"]["skipped"]
    header = browser.find_element(By.TAG_NAME, "header").text
    assert "Duplicate groups" in header and str(report["stats"]["groups"]) in header

    # filter by a path substring of one group's member: only that group remains
    group = report["groups"][-1]
    needle = os.path.basename(group["members"][-1]["path"])
    _type_filter(browser, needle)
    assert _count(browser, "#groups section.group") == sum(
        any(needle.lower() in m["path"].lower() for m in g["members"]) for g in report["groups"]
    )
    _type_filter(browser, "no-such-file-anywhere")
    assert _count(browser, "#groups section.group") == 0
    assert browser.find_element(By.ID, "empty").is_displayed()
    # clicking a coloured dot on the map filters to its group
    browser.execute_script(
        "document.querySelector('#map circle.grouped')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    assert _count(browser, "#groups section.group") == 1
    browser.save_screenshot(str(tmp_path / "report-filtered.png"))
    assert console_errors(browser) == []


@pytest.mark.browser
def test_ten_thousand_groups_page_and_filter_quickly(browser, tmp_path):
    from selenium.webdriver.common.by import By

    data = synthetic_report(10_000)
    page = report_html.to_html(Report.from_dict(data), thumbnails={}, page_size=50)
    out = tmp_path / "big.html"
    out.write_text(page, encoding="utf-8")
    t0 = time.perf_counter()
    browser.get(out.resolve().as_uri())
    load_seconds = time.perf_counter() - t0
    assert console_errors(browser) == []
    assert _count(browser, "#groups section.group") == 50  # only the current page is in the DOM
    assert _count(browser, "#groups .placeholder") == sum(len(g["members"]) for g in data["groups"][:50])
    info = browser.find_element(By.ID, "page-info").text
    assert "Page 1 of 200" in info and "of 10000" in info
    # groups sorted by size: the first page holds the largest groups
    sizes = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#groups section.group'),"
        " function (s) { return s.querySelectorAll('figure').length; })"
    )
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == max(len(g["members"]) for g in data["groups"])

    prev, nxt = browser.find_element(By.ID, "prev"), browser.find_element(By.ID, "next")
    assert not prev.is_enabled()
    first_ids = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#groups section.group'),"
        " function (s) { return s.getAttribute('data-group'); })"
    )
    nxt.click()
    assert "Page 2 of 200" in browser.find_element(By.ID, "page-info").text
    second_ids = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#groups section.group'),"
        " function (s) { return s.getAttribute('data-group'); })"
    )
    assert len(second_ids) == 50 and not set(first_ids) & set(second_ids)
    prev.click()
    assert "Page 1 of 200" in browser.find_element(By.ID, "page-info").text

    # a filter over 10,000 groups answers at once (timed inside the page, without the debounce)
    seconds = browser.execute_script(
        "var box = document.getElementById('filter'); box.value = 'folder7/';"
        "var t = performance.now(); box.dispatchEvent(new Event('change'));"
        "return (performance.now() - t) / 1000;"
    )
    expected = sum(1 for g in data["groups"] if any("folder7/" in m["path"] for m in g["members"]))
    assert f"of {expected} (filtered from 10000)" in browser.find_element(By.ID, "page-info").text
    assert _count(browser, "#groups section.group") == min(50, expected)
    assert seconds < 2.0, f"filtering took {seconds:.2f}s"
    assert load_seconds < 30, f"loading took {load_seconds:.1f}s"
    browser.save_screenshot(str(tmp_path / "big.png"))
    assert console_errors(browser) == []


def _attr_list(driver, css: str, attr: str) -> list[str]:
    return driver.execute_script(
        "var name = arguments[1];"
        "return Array.prototype.map.call(document.querySelectorAll(arguments[0]),"
        " function (e) { return e.getAttribute(name); })",
        css,
        attr,
    )


def _set_cluster_filter(driver, text: str) -> float:
    """Set the cluster filter and apply it at once (no debounce); returns the seconds it took in the page."""
    return float(
        driver.execute_script(
            "var box = document.getElementById('cfilter'); box.value = arguments[0];"
            "var t = performance.now(); box.dispatchEvent(new Event('change'));"
            "return (performance.now() - t) / 1000;",
            text,
        )
    )


@pytest.mark.browser
def test_cluster_report_in_headless_chromium(cli, browser, tmp_path):
    from selenium.webdriver.common.by import By

    root = tmp_path / "photos"
    write_families(root, sizes=(16, 10))  # 26 images in 2 clusters: one holds more than 12
    out_html, out_json = tmp_path / "clusters.html", tmp_path / "clusters.json"
    result = _group(cli,
        root, "--to", tmp_path / "sorted", "-m", "kmeans", "-k", "2", "-f", "phash", "--dry-run",
        "--report", out_html, "--report", out_json,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    browser.get(out_html.resolve().as_uri())
    browser.save_screenshot(str(tmp_path / "clusters.png"))
    assert console_errors(browser) == []
    sample = report_html.CLUSTER_SAMPLE
    assert _count(browser, "#clusters section.cluster") == len(report["clusters"]) == 2
    assert _count(browser, "#clusters figure.thumb") == sum(
        min(sample, c["size"]) for c in report["clusters"]
    )
    assert _count(browser, "#clusters figure.thumb img") == _count(browser, "#clusters figure.thumb")
    widths = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#clusters img'),"
        " function (i) { return i.complete ? i.naturalWidth : -1; })"
    )
    assert all(w > 0 for w in widths), widths
    assert _count(browser, "#clusters .more") == sum(c["size"] > sample for c in report["clusters"]) >= 1
    for c in report["clusters"]:  # block order and sample order (nearest the centre first) follow the JSON
        shown = _attr_list(browser, f'#clusters section[data-cluster="{c["id"]}"] figure', "data-path")
        assert shown == [m["path"] for m in c["members"][:sample]]
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#clusters section.cluster h3")]
    assert [t.split("/")[0] for t in titles] == [c["name"] for c in report["clusters"]]
    assert browser.find_element(By.ID, "groups-section").is_displayed() == (report["stats"]["groups"] > 0)
    assert _count(browser, "#map circle.clustered") == report["stats"]["images"] == 26
    # clicking a dot shows its cluster only
    browser.execute_script(
        "document.querySelectorAll('#map circle.clustered')[3]"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    dot_cluster = browser.execute_script(
        "return document.querySelectorAll('#map circle.clustered')[3].getAttribute('data-cluster')"
    )
    assert _attr_list(browser, "#clusters section.cluster", "data-cluster") == [dot_cluster]
    assert console_errors(browser) == []


@pytest.mark.browser
def test_thousand_clusters_page_and_filter_quickly(browser, tmp_path):
    from selenium.webdriver.common.by import By

    data = synthetic_clusters_report(1000)
    out = tmp_path / "clusters.html"
    out.write_text(report_html.to_html(Report.from_dict(data), thumbnails={}), encoding="utf-8")
    t0 = time.perf_counter()
    browser.get(out.resolve().as_uri())
    load_seconds = time.perf_counter() - t0
    assert console_errors(browser) == []
    per_page = report_html.CLUSTER_PAGE_SIZE
    assert _count(browser, "#clusters section.cluster") == per_page  # only the current page is in the DOM
    first = data["clusters"][:per_page]
    assert _count(browser, "#clusters .placeholder") == sum(
        min(report_html.CLUSTER_SAMPLE, c["size"]) for c in first
    )
    assert "Page 1 of 50" in browser.find_element(By.ID, "cpage-info").text
    assert not browser.find_element(By.ID, "groups-section").is_displayed()  # no duplicate groups
    ids = _attr_list(browser, "#clusters section.cluster", "data-cluster")
    assert ids == [str(c["id"]) for c in first]
    browser.find_element(By.ID, "cnext").click()
    assert "Page 2 of 50" in browser.find_element(By.ID, "cpage-info").text
    assert _attr_list(browser, "#clusters section.cluster", "data-cluster") == [
        str(c["id"]) for c in data["clusters"][per_page : 2 * per_page]
    ]
    seconds = _set_cluster_filter(browser, "#537")
    assert _attr_list(browser, "#clusters section.cluster", "data-cluster") == ["537"]
    _set_cluster_filter(browser, "cluster-00")  # folder-name substring: clusters 1-99
    assert "of 99 (filtered from 1000)" in browser.find_element(By.ID, "cpage-info").text
    _set_cluster_filter(browser, "no-such-cluster")
    assert browser.find_element(By.ID, "cempty").is_displayed()
    assert seconds < 2.0 and load_seconds < 30, (seconds, load_seconds)
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def verified_scan(tmp_path_factory):
    """The hard variants of one photo (crop, letterbox, flip, rotations, overlay) in ``v/``, and copies
    of the original under the same name in two folders; scanned with the offline default (verified)."""
    import shutil

    from imagegen import write_verify_dataset

    root = tmp_path_factory.mktemp("evidence") / "photos"
    truth = write_verify_dataset(root / "v")
    for folder in ("a", "b"):
        (root / folder).mkdir()
        shutil.copy(truth["original"], root / folder / "original.jpg")
    cfg = load_config(overrides={"features.extractor": "phash+thumb+color"})
    return root, find_duplicates([root], cfg)


def test_html_carries_evidence_and_folder_of_every_member(verified_scan, tmp_path):
    root, result = verified_scan
    report = from_result(result)
    page = report_html.to_html(report, thumbnails={})
    block = _data_block(page)
    assert block["base"] == str(root)
    members = {m["path"]: m for g in block["groups"] for m in g["members"]}
    verified = [m for m in members.values() if m["evidence"] == "verified"]
    assert verified and all(isinstance(m["inliers"], int) for m in verified)
    assert any(m["rotation"] not in (None, 0) for m in verified)  # the rotated copies say so
    assert all(m["format"] == "JPEG" and isinstance(m["quality"], int) for m in members.values())
    # the parameters are a collapsed section at the bottom, not a table above the groups
    assert page.index('id="params"') > page.index('id="groups-section"')
    assert '<details id="params"><summary>Parameters' in page
    assert page.count('<table class="params"') == 1 and page.index('<table class="params"') > page.index(
        "<h2>Skipped files</h2>"
    )


@pytest.mark.browser
def test_report_badges_folders_enlarge_in_headless_chromium(browser, verified_scan, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, result = verified_scan
    report = from_result(result)
    out = write_report(report, tmp_path / "r.html")
    browser.get(out.resolve().as_uri())
    assert console_errors(browser) == []
    members = [m for g in report.groups for m in g.members]
    assert _count(browser, "#groups .badge.verified") == sum(m.evidence == "verified" for m in members)
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#groups .badge.verified")]
    assert all(re.fullmatch(r"verified · \d+ inliers", t) for t in texts), texts
    rotated = sum(
        1
        for g in report.groups
        for m in g.members
        if m.path != g.keep and m.rotation is not None and abs(m.rotation) >= 3
    )
    assert rotated >= 1 and _count(browser, "#groups .badge.rotated") == rotated
    folders = browser.execute_script(
        "var out = {}; document.querySelectorAll('#groups figure').forEach(function (f) {"
        " out[f.getAttribute('data-path')] = f.querySelector('.folder').textContent; }); return out;"
    )
    assert folders[str(root / "a" / "original.jpg")] == "a"
    assert folders[str(root / "b" / "original.jpg")] == "b"
    assert folders[str(root / "v" / "crop.jpg")] == "v"
    # the parameters are collapsed at the bottom
    params = browser.find_element(By.ID, "params")
    assert params.get_attribute("open") is None
    assert browser.execute_script(
        "return document.getElementById('params').getBoundingClientRect().top >"
        " document.getElementById('groups').getBoundingClientRect().bottom"
    )
    # click a thumbnail: the viewer shows the file itself (file:// from the report's folder)
    browser.find_element(By.CSS_SELECTOR, "#groups figure.thumb img[data-action=enlarge]").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script(
            "var v = document.querySelector('.viewer'); var i = v && v.querySelector('img');"
            "return v && !v.hidden && i && i.complete && i.naturalWidth > 0;"
        )
    )
    src = browser.execute_script("return document.querySelector('.viewer img').src")
    width = browser.execute_script("return document.querySelector('.viewer img').naturalWidth")
    assert src.startswith("file://") and width > 160  # the full image, not the thumbnail
    browser.save_screenshot(str(tmp_path / "enlarged.png"))
    browser.find_element(By.CSS_SELECTOR, ".viewer [data-action=close-viewer]").click()
    assert browser.execute_script("return document.querySelector('.viewer').hidden")
    assert console_errors(browser) == []
