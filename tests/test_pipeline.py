import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from dedup import find_duplicates, load_config
from dedup.errors import InputError
from dedup.report import from_result

from helpers import shared_data, tree_state

PHASH = {"features.extractor": "phash"}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    from imagegen import write_dataset

    root = tmp_path_factory.mktemp("scan") / "data"
    truth = write_dataset(root)
    before = tree_state(root)
    result = find_duplicates([root], load_config(overrides=PHASH))
    return truth, result, before


def test_phash_finds_the_expected_groups(scanned):
    truth, result, _ = scanned
    found = [{result.images[m].path for m in g.members} for g in result.groups]
    assert len(found) == len(truth["phash_groups"])
    for paths in truth["phash_groups"].values():  # everything phash is expected to catch is caught...
        assert any(set(paths) <= group for group in found), paths
    for group in found:  # ...and nothing else but true duplicates (a borderline crop may join its group)
        assert any(group <= set(paths) for paths in truth["groups"].values()), group


def test_skipped_files_have_reasons_and_nothing_crashes(scanned):
    truth, result, _ = scanned
    assert {s.path: s.reason for s in result.skipped} == truth["skipped"]
    assert sorted(r.path for r in result.images) == sorted(truth["decodable"])


def test_scan_leaves_the_tree_byte_for_byte_unchanged(scanned):
    truth, result, before = scanned
    assert tree_state(Path(truth["root"])) == before


def test_every_member_is_within_threshold_of_its_kept_image(scanned):
    truth, result, _ = scanned
    v, mirrored = result.embeddings.vectors, result.embeddings.mirrored
    assert v.shape == mirrored.shape == (len(result.images), 256)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    flips = 0
    for g in result.groups:
        assert g.members[0] == g.keep
        for m, s, flipped in zip(g.members, g.similarities, g.mirrored, strict=True):
            assert s >= result.threshold - 1e-6
            direct = float(v[m] @ v[g.keep])
            via_mirror = max(float(mirrored[m] @ v[g.keep]), float(v[m] @ mirrored[g.keep]))
            assert s == pytest.approx(max(direct, via_mirror), abs=1e-5)
            assert flipped == (via_mirror > direct + 1e-6)
            if truth["transforms"][result.images[m].path] == "hflip":
                assert flipped
                flips += 1
    assert flips == len(truth["groups"])  # every flipped copy found, as a mirror image


def test_kept_image_follows_the_policy(scanned):
    _, result, _ = scanned
    for g in result.groups:
        areas = [result.images[m].width * result.images[m].height for m in g.members]
        assert areas[0] == max(areas)


def test_report_dict_matches_schema(scanned):
    _, result, _ = scanned
    report = from_result(result).to_dict()
    assert report["version"] == 1 and report["tool"].startswith("dedup ")
    assert set(report) >= {"created", "paths", "extractor", "params", "stats", "groups", "skipped"}
    assert set(report["extractor"]) >= {"name", "weights", "pooling", "input_size", "fallback_used"}
    stats = report["stats"]
    assert set(stats["seconds"]) == {"decode_extract", "index", "cluster"}
    assert stats["groups"] == len(report["groups"]) == len(result.groups)
    assert stats["duplicates"] == sum(len(g["members"]) - 1 for g in report["groups"])
    assert stats["reclaimable_bytes"] == sum(
        m["bytes"] for g in report["groups"] for m in g["members"] if m["path"] != g["keep"]
    )
    assert stats["skipped"] == len(report["skipped"])
    for g in report["groups"]:
        assert g["keep"] in [m["path"] for m in g["members"]]
        for m in g["members"]:
            assert set(m) >= {"path", "similarity_to_keep", "bytes", "width", "height"}
            assert m["path"].startswith("/")
    assert [g["id"] for g in report["groups"]] == list(range(1, len(report["groups"]) + 1))
    sizes = [len(g["members"]) for g in report["groups"]]
    assert sizes == sorted(sizes, reverse=True)
    assert report["params"]["threshold"] == result.threshold


def test_without_mirror_flipped_copies_are_not_grouped(scanned):
    truth, _, _ = scanned
    result = find_duplicates([truth["root"]], load_config(overrides={**PHASH, "features.mirror": False}))
    assert result.embeddings.mirrored is None
    grouped = {result.images[m].path for g in result.groups for m in g.members}
    flipped = {p for p, t in truth["transforms"].items() if t == "hflip"}
    assert grouped and not grouped & flipped


def test_threshold_one_groups_only_identical_hashes(scanned, tmp_path):
    truth, _, _ = scanned
    result = find_duplicates([truth["root"]], load_config(overrides={**PHASH, "cluster.threshold": 1.0}))
    for g in result.groups:
        assert all(s == pytest.approx(1.0) for s in g.similarities)


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_duplicates([tmp_path / "nope"], load_config(overrides=PHASH))


def test_empty_folder_gives_empty_result(tmp_path):
    result = find_duplicates([tmp_path], load_config(overrides=PHASH))
    assert result.images == [] and result.groups == [] and result.duplicates == 0
    assert from_result(result).to_dict()["stats"]["images"] == 0


def test_identical_files_group_with_similarity_one(tmp_path):
    from imagegen import make_photo

    make_photo(1).save(tmp_path / "a.jpg", quality=90)
    (tmp_path / "b.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    make_photo(2).save(tmp_path / "c.png")
    result = find_duplicates([tmp_path], load_config(overrides=PHASH))
    assert len(result.groups) == 1
    assert result.groups[0].similarities == (1.0, 1.0)
    assert result.reclaimable_bytes == (tmp_path / "a.jpg").stat().st_size


def test_progress_reports_every_phase(tmp_path):
    from imagegen import make_photo

    for i in range(3):
        make_photo(i).save(tmp_path / f"{i}.jpg")
    seen: list[tuple[str, int, int | None]] = []
    find_duplicates([tmp_path], load_config(overrides=PHASH), progress=lambda *a: seen.append(a))
    phases = [p for p, _, _ in seen]
    for phase in ("discover", "extract", "index", "cluster"):
        assert phase in phases
    assert ("extract", 3, 3) in seen


@pytest.mark.tf
def test_vgg16_runs_through_the_whole_pipeline(tmp_path):
    """The real Keras VGG16 (random weights: no ImageNet offline) end to end; identical files must group."""
    from imagegen import make_photo

    make_photo(1).save(tmp_path / "a.jpg", quality=90)
    (tmp_path / "copy.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    make_photo(2).save(tmp_path / "b.png")
    warnings: list[str] = []
    cfg = load_config(
        overrides={
            "features.extractor": "vgg16",
            "features.weights": "none",
            "features.input_size": 32,
            "features.mirror": False,
        }
    )
    result = find_duplicates([tmp_path], cfg, warn=warnings.append)
    assert result.extractor["name"] == "vgg16" and result.extractor["fallback_used"] is False
    assert result.embeddings.vectors.shape == (3, 512)
    assert any("untrained" in w or "random" in w for w in warnings)
    groups = [{Path(result.images[m].path).name for m in g.members} for g in result.groups]
    assert any({"a.jpg", "copy.jpg"} <= g for g in groups)


@pytest.mark.realdata
def test_real_photos_byte_identical_copies_group_and_corrupt_files_skip():
    base = shared_data() / "imagededup-testdata"
    if not base.is_dir():
        pytest.skip(f"shared test data not found under {base} (set DEDUP_SHARED_DATA)")
    rows = list(csv.DictReader((base / "ground_truth.csv").open()))
    result = find_duplicates([base], load_config(overrides=PHASH))
    group_of = {result.images[m].path: i for i, g in enumerate(result.groups) for m in g.members}
    by_hash: dict[str, list[str]] = {}
    for row in rows:
        path = str(base / row["path"])
        if row["group_id"] != "CORRUPT":
            by_hash.setdefault(hashlib.sha256(Path(path).read_bytes()).hexdigest(), []).append(path)
    identical = [paths for paths in by_hash.values() if len(paths) > 1]
    assert identical
    for paths in identical:
        assert len({group_of.get(p) for p in paths}) == 1 and paths[0] in group_of
    corrupt = {str(base / r["path"]) for r in rows if r["group_id"] == "CORRUPT"}
    assert corrupt <= {s.path for s in result.skipped}


def test_rotated_views_follow_verification_when_auto(tmp_path):
    """features.rotations auto: rotated views only when keypoints verify the candidates they propose."""
    from dedup.pipeline import collect_features

    from imagegen import make_photo

    for i in range(3):
        make_photo(i).save(tmp_path / f"{i}.jpg")

    def views(**overrides):
        cfg = load_config(overrides={"cache.enabled": False, **overrides})
        return [[name for name, _ in emb.views] for emb in collect_features([tmp_path], cfg).all_embeddings]

    assert views(**{"features.extractor": "phash"}) == [[]]  # a plain hash scan stays fast
    forced = views(**{"features.extractor": "phash", "features.rotations": True})
    assert forced[0][:3] == ["rot90", "rot180", "rot270"]
    assert all("rot90" in v for v in views(**{"features.extractor": "phash+thumb"}))  # verified combination


@pytest.mark.parametrize("extractor", ["phash+thumb+color", "phash", "thumb"])
def test_blank_images_are_reported_and_never_grouped(tmp_path, cli, extractor):
    """Issue 16, 10: four single-colour PNGs (and a nearly flat one) used to form one group at similarity
    1.0 (phash 'sure') and prune moved three of them."""
    from PIL import Image

    from imagegen import make_photo

    root = tmp_path / "photos"
    root.mkdir()
    for name, colour in {
        "black": (0, 0, 0),
        "white": (255, 255, 255),
        "red": (255, 0, 0),
        "blue": (0, 0, 255),
    }.items():
        Image.new("RGB", (640, 480), colour).save(root / f"{name}.png")
    noise = np.random.default_rng(0).integers(0, 2, (480, 640, 3), dtype=np.uint8) + 120  # +-1 grey level
    Image.fromarray(noise).save(root / "nearly_flat.png")
    photo = make_photo(1, (320, 240))
    photo.save(root / "photo.png")
    photo.resize((160, 120)).save(root / "photo_small.png")
    result = find_duplicates([root], load_config(overrides={"features.extractor": extractor}))
    groups = [sorted(Path(result.images[m].path).name for m in g.members) for g in result.groups]
    assert groups == [["photo.png", "photo_small.png"]]
    blank = sorted(Path(result.images[i].path).name for i in result.blank)
    assert blank == ["black.png", "blue.png", "nearly_flat.png", "red.png", "white.png"]
    report = from_result(result).to_dict()
    assert report["stats"]["blank"] == 5
    assert {Path(i["path"]).name for i in report["images"] if i.get("blank")} == set(blank)
    assert all("blank" not in i for i in report["images"] if Path(i["path"]).name.startswith("photo"))
    q = tmp_path / "q"
    summary = cli("scan", root, "--features", extractor)
    assert summary.exit_code == 0 and "Blank images (not compared)" in summary.stdout
    moved = cli("prune", root, "--to", q, "--features", extractor)
    assert moved.exit_code == 0, moved.output
    assert sorted(p.name for p in q.rglob("*.png")) == ["photo_small.png"]
