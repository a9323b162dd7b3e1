"""``find_similar`` and ``dedup similar``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dedup.config import load_config
from dedup.errors import InputError
from dedup.pipeline import find_similar

PHASH = {"features.extractor": "phash"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from imagegen import write_dataset

    return write_dataset(tmp_path_factory.mktemp("similar") / "data")


def test_query_inside_the_folder_is_left_out_and_its_group_comes_first(data):
    query = data["phash_groups"]["a"][0]
    result = find_similar(query, [data["root"]], load_config(None, PHASH), k=5)
    paths = [m.image.path for m in result.matches]
    assert query not in paths and len(paths) == 5
    expected = set(data["phash_groups"]["a"]) - {query}
    assert set(paths[: len(expected)]) == expected
    sims = [m.similarity for m in result.matches]
    assert sims == sorted(sims, reverse=True) and sims[0] <= 1.0
    flipped = [m for m in result.matches if data["transforms"].get(m.image.path) == "hflip"]
    assert flipped and flipped[0].mirrored and flipped[0].similarity >= 0.95
    assert result.query.path == query and len(result.collection.images) == len(data["decodable"]) - 1


def test_query_outside_the_folder_finds_its_identical_copy(data, tmp_path):
    query = tmp_path / "q.jpg"
    shutil.copy(data["phash_groups"]["b"][0], query)
    result = find_similar(query, [data["root"]], load_config(None, PHASH), k=3)
    by_path = {m.image.path: m.similarity for m in result.matches}
    assert by_path[data["phash_groups"]["b"][0]] == pytest.approx(1.0)
    assert result.matches[0].similarity == pytest.approx(1.0)


def test_symlinked_query_is_still_left_out(data, tmp_path):
    link = tmp_path / "link.jpg"
    os.symlink(data["phash_groups"]["c"][0], link)
    result = find_similar(link, [data["root"]], load_config(None, PHASH), k=50)
    assert data["phash_groups"]["c"][0] not in [m.image.path for m in result.matches]


def test_without_mirror_a_flipped_copy_is_far(data):
    query = data["phash_groups"]["a"][0]
    flip = next(p for p in data["groups"]["a"] if data["transforms"][p] == "hflip")
    result = find_similar(query, [data["root"]], load_config(None, {**PHASH, "features.mirror": False}), k=50)
    match = next(m for m in result.matches if m.image.path == flip)
    assert not match.mirrored and match.similarity < 0.7


def test_bad_queries_are_input_errors(data, tmp_path):
    cfg = load_config(None, PHASH)
    with pytest.raises(InputError, match="does not exist"):
        find_similar(tmp_path / "nope.jpg", [data["root"]], cfg)
    with pytest.raises(InputError, match="cannot use query image"):
        find_similar(data["special"]["truncated"], [data["root"]], cfg)
    with pytest.raises(InputError, match="k must be at least 1"):
        find_similar(data["phash_groups"]["a"][0], [data["root"]], cfg, k=0)


def test_empty_folder_gives_no_matches(data, tmp_path):
    (tmp_path / "empty").mkdir()
    result = find_similar(data["phash_groups"]["a"][0], [tmp_path / "empty"], load_config(None, PHASH))
    assert result.matches == []


def test_similar_cli_table_and_json(cli, data):
    query = data["phash_groups"]["d"][0]
    result = cli("similar", query, "--in", data["root"], "-f", "phash", "-k", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Most similar to" in out and "%" in out and "d_" in out
    assert len([line for line in out.splitlines() if line.startswith("│")]) == 3
    result = cli("similar", query, "--in", data["root"], "-f", "phash", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["query"] == query and parsed["k"] == 3 and len(parsed["matches"]) == 3
    first = parsed["matches"][0]
    assert first["rank"] == 1 and first["percent"] == pytest.approx(first["similarity"] * 100, abs=0.01)
    assert first["path"] in data["phash_groups"]["d"]
    assert {s["path"] for s in parsed["skipped"]} == set(data["skipped"])


def test_similar_cli_errors(cli, data, tmp_path):
    result = cli("similar", str(tmp_path / "nope.jpg"), "--in", data["root"], "-f", "phash")
    assert result.exit_code == 1 and "Error:" in result.stderr
    result = cli("similar", data["phash_groups"]["a"][0], "-f", "phash")
    assert result.exit_code == 2  # --in is required
    result = cli("similar", data["phash_groups"]["a"][0], "--in", data["root"], "-k", "0")
    assert result.exit_code == 2
    assert Path(data["root"]).exists()


def test_similar_finds_what_scan_groups_at_any_k(data):
    """With the default extractors (offline: phash+thumb+color, verified), every image scan puts in the
    query's group is a duplicate of the query in ``similar`` and comes first, at k = 1 as at k = 30: the
    cropped and EXIF-rotated copies included, which phash alone does not find."""
    from dedup.pipeline import find_duplicates

    cfg = load_config(None, {"cache.enabled": False})
    scan = find_duplicates([data["root"]], cfg)
    assert scan.verified
    by_path = {im.path: i for i, im in enumerate(scan.images)}
    group_of = {scan.images[m].path: g for g in scan.groups for m in g.members}
    for name in ("a", "b"):
        query = data["groups"][name][0]
        group = group_of[query]
        mates = {scan.images[m].path for m in group.members} - {query}
        assert any(data["transforms"].get(p) == "crop_5pct" for p in mates)  # beyond phash alone
        for k in (1, len(mates), 30):
            result = find_similar(query, [data["root"]], cfg, k=k)
            assert result.verified and len(result.matches) == min(k, len(scan.images) - 1)
            shown = result.matches[: min(k, len(mates))]
            assert all(m.duplicate and m.image.path in mates for m in shown), [
                (m.image.path, m.evidence) for m in shown
            ]
        full = find_similar(query, [data["root"]], cfg, k=len(mates) + 3)
        assert {m.image.path for m in full.matches if m.duplicate} == mates
        assert not any(m.duplicate for m in full.matches[len(mates) :])
        assert all(by_path[m.image.path] >= 0 for m in full.matches)


def test_similar_json_says_which_matches_are_duplicates(cli, data):
    query = data["groups"]["a"][0]
    result = cli("similar", query, "--in", data["root"], "-k", "2", "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["verified"] is True and parsed["extractor"]["name"] == "phash+thumb+color"
    first = parsed["matches"][0]
    assert first["duplicate"] is True and first["evidence"] in ("similar", "verified")
    assert set(first["similarities"]) == {"phash", "thumb", "color"}
