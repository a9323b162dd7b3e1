"""Threshold sweep (dedup/tune.py), the chart writer (dedup/plot.py) and the ``tune`` command."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from dedup import tune as tuning
from dedup.config import load_config
from dedup.embeddings import Embeddings
from dedup.errors import InputError
from dedup.pipeline import collect_features, find_duplicates

from imagegen import make_photo

PHASH = {"features.extractor": "phash"}


def write_known_groups(root: Path, k: int, distractors: int) -> list[set[str]]:
    """``k`` originals, each with 3 near-copies (JPEG q30, half size, +10 % brightness), plus unrelated
    single images. Returns the true groups as sets of absolute paths."""
    root.mkdir(parents=True)
    groups = []
    for g in range(k):
        photo = make_photo(300 + g)
        files = {
            f"g{g}.jpg": lambda p, photo=photo: photo.save(p, quality=95),
            f"g{g}_q30.jpg": lambda p, photo=photo: photo.save(p, quality=30),
            f"g{g}_half.jpg": lambda p, photo=photo: photo.resize((160, 120)).save(p, quality=90),
            f"g{g}_bright.jpg": lambda p, photo=photo: (
                ImageEnhance.Brightness(photo).enhance(1.1).save(p, quality=90)
            ),
        }
        for name, write in files.items():
            write(root / name)
        groups.append({str(root / name) for name in files})
    for d in range(distractors):
        make_photo(900 + d).save(root / f"single{d}.jpg", quality=90)
    return groups


@pytest.mark.parametrize("distractors", [0, 6])
def test_suggested_threshold_recovers_the_known_groups(tmp_path, distractors):
    truth = write_known_groups(tmp_path / "d", k=5, distractors=distractors)
    cfg = load_config(None, PHASH)
    result = tuning.tune([tmp_path / "d"], cfg)
    assert result.images == 20 + distractors
    assert result.rule in ("plateau", "elbow")
    assert str(result.suggested) in result.reason or f"{result.suggested:.3f}" in result.reason
    at = load_config(None, {**PHASH, "cluster.threshold": result.suggested})
    found = find_duplicates([tmp_path / "d"], at)
    got = [{found.images[m].path for m in g.members} for g in found.groups]
    assert sorted(map(sorted, got)) == sorted(map(sorted, truth))
    row = next(r for r in result.rows if r.threshold == result.suggested)
    assert (row.groups, row.duplicates, row.grouped) == (5, 15, 20)
    assert row.silhouette is not None and row.silhouette > 0.5


def test_sweep_equals_find_duplicates_at_every_threshold(tmp_path):
    write_known_groups(tmp_path / "d", k=3, distractors=3)
    cfg = load_config(None, PHASH)
    collection = collect_features([tmp_path / "d"], cfg)
    thresholds = [0.5, 0.8, 0.9, 0.95, 0.99]
    result = tuning.sweep(collection, thresholds)
    assert [r.threshold for r in result.rows] == thresholds
    for row in result.rows:
        ref = find_duplicates(
            [tmp_path / "d"], load_config(None, {**PHASH, "cluster.threshold": row.threshold})
        )
        assert (row.groups, row.duplicates, row.chain_splits) == (
            len(ref.groups),
            ref.duplicates,
            ref.chain_splits,
        )


def test_no_duplicates_keeps_the_default(tmp_path):
    (tmp_path / "d").mkdir()
    for s in range(6):
        make_photo(700 + s).save(tmp_path / "d" / f"{s}.jpg", quality=90)
    result = tuning.tune([tmp_path / "d"], load_config(None, PHASH), lowest=0.8)
    assert all(r.groups == 0 and r.silhouette is None for r in result.rows)
    assert result.rule == "default" and result.suggested == result.default_threshold == 0.7


def test_k_distances_hand_case():
    # unit vectors at angles 0, 10, 90 and 100 degrees: nearest neighbours are 10 degrees apart
    angles = np.radians([0.0, 10.0, 90.0, 100.0])
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    rows = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    cols = np.array([1, 2, 0, 3, 3, 1, 2, 0])
    d1 = tuning.k_distances(Embeddings(v), rows, cols, 1)
    np.testing.assert_allclose(d1, [1 - np.cos(np.radians(10))] * 4, atol=1e-6)
    d2 = tuning.k_distances(Embeddings(v), rows, cols, 2)  # second candidate of each
    np.testing.assert_allclose(
        sorted(d2), sorted([1 - np.cos(np.radians(a)) for a in (90, 90, 80, 100)]), atol=1e-6
    )
    assert tuning.k_distances(Embeddings(v), rows, cols, 3).size == 0  # nobody has 3 candidates


def test_threshold_range():
    assert tuning.threshold_range(0.5, 0.6, 0.05) == [0.5, 0.55, 0.6]
    assert tuning.threshold_range(0.9, 0.9, 0.1) == [0.9]
    assert tuning.default_thresholds("phash")[0] == 0.5 and tuning.default_thresholds("phash")[-1] == 0.96
    assert tuning.default_thresholds("vgg16", step=0.1) == [0.7, 0.8, 0.9]
    for bad in ((0.9, 0.5, 0.1), (0.5, 0.9, 0.0), (-2.0, 0.5, 0.1)):
        with pytest.raises(InputError):
            tuning.threshold_range(*bad)


def _check_svg(path: Path) -> None:
    root = ET.fromstring(path.read_text())
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 4


def test_tune_cli_table_plot_and_json(cli, tmp_path):
    write_known_groups(tmp_path / "d", k=3, distractors=2)
    svg, png = tmp_path / "t.svg", tmp_path / "t.png"
    result = cli("tune", str(tmp_path / "d"), "-f", "phash", "--plot", str(svg))
    assert result.exit_code == 0, result.output
    assert "Suggested cluster.threshold:" in result.stdout and "k-distance curve (k = 1" in result.stdout
    assert "▶" in result.stdout and f"Plot written to {svg}" in result.stdout
    _check_svg(svg)
    result = cli(
        "tune", tmp_path / "d", "-f", "phash", "--plot", png, "--json", "--min", "0.8", "--step", "0.05"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [t["threshold"] for t in data["thresholds"]] == [0.8, 0.85, 0.9, 0.95]
    assert data["suggested"] in [0.8, 0.85, 0.9, 0.95] and data["reason"]
    assert len(data["k_distance"]) == data["images"] == 14
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (820, 840)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot", "t.pdf"], "use .svg or .png"),
        (["--min", "0.9", "--max", "0.5"], "above the highest"),
        (["--step", "0"], "step must be positive"),
        (["--step", "1e-9"], "thresholds; at most 1,001"),  # issue 16: no output after 300 s
        (["--step", "nan"], "step must be a number"),
        (["--min", "nan"], "must lie in -1..1"),
    ],
)
def test_tune_cli_bad_options_fail_before_extracting(cli, tmp_path, args, message):
    result = cli("tune", str(tmp_path), "-f", "phash", *args)
    assert result.exit_code == 1
    assert message in result.stderr and "Sweeping" not in result.stderr


def test_a_fine_step_over_a_narrow_range_is_allowed():
    assert len(tuning.threshold_range(0.90, 0.95, 0.0001)) == 501


def test_verified_tune_rows_are_the_scans_at_that_sure_threshold(cli, tmp_path):
    """With the default extractors (offline: phash+thumb+color, verified) tune sweeps
    verify.sure_threshold through the scan's own path: applying a row's value reproduces the row, and the
    value changes the scan; --truth adds precision / recall per threshold to the JSON and the plot."""
    truth = write_known_groups(tmp_path / "d", k=3, distractors=3)
    # a look-alike no keypoints confirm: a duplicate below the sure threshold only, a false pair here
    make_photo(300).filter(ImageFilter.GaussianBlur(8)).save(tmp_path / "d" / "blurred.jpg", quality=90)
    truth_csv = tmp_path / "truth.csv"
    lines = ["path,group_id"]
    for g, members in enumerate(truth):
        lines += [f"{p},g{g}" for p in sorted(members)]
    singles = {str(p) for p in (tmp_path / "d").iterdir()} - set().union(*truth)
    lines += [f"{p},s{i}" for i, p in enumerate(sorted(singles))]
    truth_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    svg = tmp_path / "t.svg"
    result = cli(
        "tune", tmp_path / "d", "--min", "0.5", "--max", "1.0", "--step", "0.25", "--json", "--no-cache",
        "--truth", truth_csv, "--plot", svg,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["key"] == "verify.sure_threshold" and data["verified"] is True
    rows = {r["threshold"]: r for r in data["thresholds"]}
    assert set(rows) == {0.5, 0.75, 1.0}
    assert all(r["precision"] is not None and 0 <= r["recall"] <= 1 for r in rows.values())
    assert "Precision and recall" in svg.read_text(encoding="utf-8")
    seen = set()
    for t, row in rows.items():
        cfg = load_config(overrides={"verify.sure_threshold": t, "cache.enabled": False})
        scan = find_duplicates([tmp_path / "d"], cfg)
        assert (len(scan.groups), scan.duplicates) == (row["groups"], row["duplicates"]), t
        seen.add((row["groups"], row["duplicates"], row["precision"]))
    assert len(seen) > 1  # the swept value changes what the scan reports
