"""The saved index (``dedup index build|update``, ``dedup assign``, ``Index.load(...).assign(...)``): answers
agree with a scan, known images keep their group and cluster, updates take in only what is new, damaged or
foreign folders are one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dedup.embeddings import Embeddings, l2_normalize, to_distance
from dedup.index import build_index, nearest
from dedup.pipeline import find_duplicates
from dedup.saved_index import MANIFEST, Index

from indextools import index_config, write_collection, write_new


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path], Path]:
    """``(index folder, collection, new images, folder of the new images)``; the index is built once."""
    tmp = tmp_path_factory.mktemp("saved-index")
    collection = write_collection(tmp / "photos")
    new = write_new(tmp / "new", collection)
    Index.build([collection["root"]], tmp / "photos.index", index_config())
    return tmp / "photos.index", collection, new, tmp / "new"


def _scan_group_of(paths: list[Path], image: Path) -> set[str] | None:
    """The members of the group a scan of ``paths`` puts ``image`` in (None when it is in no group)."""
    result = find_duplicates(paths, index_config())
    for g in result.groups:
        members = {result.images[m].path for m in g.members}
        if str(image) in members:
            return members
    return None


def test_assign_decides_duplicate_of_exactly_as_a_scan_of_the_collection_plus_the_image(built) -> None:
    folder, collection, new, new_dir = built
    index = Index.load(folder)
    result = index.assign([new_dir])
    by_name = {Path(a.path).name: a for a in result.assignments}
    assert [Path(s.path).name for s in result.skipped] == ["broken.jpg"]
    assert "truncated" in result.skipped[0].reason
    verified = 0
    for name, path in new.items():
        answer = by_name[path.name]
        scanned = _scan_group_of([collection["root"], path], path)
        if scanned is None:
            assert answer.duplicate_of is None, (name, answer)
        else:
            assert answer.duplicate_of is not None, (name, scanned)
            assert answer.duplicate_of.path in scanned, (name, answer.duplicate_of, scanned)
            verified += answer.duplicate_of.evidence == "verified"
    # the copies are found, the look-alike on the same studio background and the unrelated photo are not
    assert by_name["reencoded.jpg"].duplicate_of.path.endswith("f1_v0.jpg")
    assert by_name["crop.jpg"].duplicate_of.path == str(collection["original"])
    assert (
        by_name["crop.jpg"].duplicate_of.evidence == "verified" and by_name["crop.jpg"].duplicate_of.inliers
    )
    assert by_name["studio612.jpg"].duplicate_of is None and by_name["unrelated.jpg"].duplicate_of is None
    assert verified >= 1


def test_a_known_image_returns_its_own_group_and_cluster(built) -> None:
    folder, collection, _, _ = built
    index = Index.load(folder)
    for group in index.groups.values():
        for row in group.members:
            image = index.images[row]
            answer = index.assign([image.path]).assignments[0]
            assert answer.known == image.path
            assert answer.duplicate_of is not None and answer.duplicate_of.group == group.id
            assert answer.duplicate_of.path == index.images[group.keep].path
            assert answer.cluster == image.cluster and answer.novel is False
    clusters = {im.cluster for im in index.images}
    assert clusters == {1, 2, 3} and [c.id for c in index.clusters] == [1, 2, 3]


def test_novel_far_from_every_cluster_and_the_embedding(built) -> None:
    folder, _, new, _ = built
    index = Index.load(folder)
    answer = index.assign([new["reencoded"], new["unrelated"]], embedding=True).assignments
    assert answer[0].novel is False and answer[1].novel is True
    radius = index.clusters[answer[1].cluster - 1].radius
    assert answer[1].distance > radius
    # a fixed threshold beyond every distance makes nothing novel
    relaxed = index.assign([new["unrelated"]], novel_distance=2.0).assignments[0]
    assert relaxed.novel is False
    vectors = answer[0].embedding
    assert set(vectors) == {"phash", "thumb", "color"}
    assert abs(np.linalg.norm(vectors["color"]) - 1.0) < 1e-4
    # the vector is the one a scan computes
    scan = find_duplicates([new["reencoded"]], index_config())
    assert np.allclose(scan.all_embeddings["thumb"].vectors[0], vectors["thumb"], atol=1e-6)


def test_update_takes_in_only_the_new_images(built, tmp_path: Path) -> None:
    folder, collection, new, new_dir = built
    copy = tmp_path / "photos.index"
    shutil.copytree(folder, copy)
    index = Index.load(copy)
    before = len(index.images)
    gone = Path(index.images[0].path)  # an indexed file that vanished is never read again
    saved = gone.read_bytes()
    gone.unlink()
    try:
        result = index.update([new_dir])
    finally:
        gone.write_bytes(saved)
    assert result.added == 6 and [Path(s.path).name for s in result.skipped] == ["broken.jpg"]
    assert result.duplicates == 4  # reencoded, crop, flip, overlay joined their groups
    again = Index.load(copy)
    assert len(again.images) == before + 6
    reencoded = again.images[again.row_of(new["reencoded"])]
    keep_of_family = [g for g in again.groups.values() if again.row_of(new["reencoded"]) in g.members][0]
    assert (
        again.images[keep_of_family.keep].path.endswith("f1_v0.jpg") and reencoded.group == keep_of_family.id
    )
    assert reencoded.cluster is not None
    # the same folder again: nothing new
    second = again.update([new_dir])
    assert second.added == 0 and second.unchanged == 6
    # an image added by the update is now known
    assert again.assign([new["unrelated"]]).assignments[0].known == str(new["unrelated"])


def test_names_yaml_names_the_clusters(built, tmp_path: Path) -> None:
    _, collection, new, _ = built
    names = tmp_path / "names.yaml"
    names.write_text('1: "largest"\n3: "third"\n', encoding="utf-8")
    index = Index.build([collection["root"]], tmp_path / "idx", index_config(), names=names)
    assert [(c.name, c.named) for c in index.clusters] == [
        ("largest", True),
        ("cluster-0002", False),
        ("third", True),
    ]
    answer = Index.load(tmp_path / "idx").assign([new["reencoded"]]).assignments[0]
    assert answer.cluster_name == [c.name for c in index.clusters][answer.cluster - 1]


def test_damaged_or_foreign_index_folders_are_one_clear_error(built, tmp_path: Path, invoke) -> None:
    folder, _, new, _ = built
    plain = tmp_path / "plain"
    plain.mkdir()
    code, out, err = invoke("assign", new["crop"], "--index", plain)
    assert code == 1 and "is not a dedup index" in err and "Traceback" not in err

    def broken(change) -> str:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, copy)
        change(copy)
        code, _, err = invoke("assign", new["crop"], "--index", copy)
        assert code == 1 and "Traceback" not in err, err
        return err

    def garble_vectors(p: Path) -> None:
        vec = next(p.glob("vectors-phash.*.npy"))
        data = bytearray(vec.read_bytes())
        data[-5] ^= 0xFF
        vec.write_bytes(bytes(data))

    def set_manifest(key: str, value: object):
        def change(p: Path) -> None:
            m = json.loads((p / MANIFEST).read_text())
            m[key] = value
            (p / MANIFEST).write_text(json.dumps(m))

        return change

    assert "damaged" in broken(garble_vectors) and "vectors-phash" in broken(garble_vectors)
    assert "damaged" in broken(lambda p: next(p.glob("images.*.jsonl")).unlink())
    assert "damaged" in broken(lambda p: (p / MANIFEST).write_text("{not json"))
    assert "format version 99" in broken(set_manifest("version", 99))
    assert "not a dedup index" in broken(set_manifest("format", "something-else"))


def test_cli_build_assign_json_lines_and_skipped_reasons(built, tmp_path: Path, invoke) -> None:
    _, collection, new, new_dir = built
    code, out, err = invoke(
        "index",
        "build",
        collection["root"],
        "--to",
        tmp_path / "idx",
        "--features",
        "phash+thumb+color",
        "-k",
        "3",
    )
    assert code == 0, err
    assert "3 clusters" in out
    code, out, err = invoke("index", "build", collection["root"], "--to", tmp_path / "idx")
    assert code == 1 and "already holds an index" in err
    code, out, err = invoke("assign", new_dir, "--index", tmp_path / "idx", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(d["path"]).name for d in lines) == sorted(p.name for p in new.values())
    assert "Skipped" in err and "broken.jpg" in err and "truncated" in err
    crop = next(d for d in lines if d["path"].endswith("crop.jpg"))
    assert (
        crop["duplicate_of"]["path"] == str(collection["original"]) and crop["duplicate_of"]["inliers"] >= 12
    )
    assert {"cluster", "cluster_name", "distance_to_centre", "novel", "known"} <= set(crop)
    code, out, err = invoke("assign", new["crop"], "--index", tmp_path / "idx", "--embedding")
    assert code == 0 and len(json.loads(out)["embedding"]["phash"]) == 256
    code, out, err = invoke("index", "update", tmp_path / "idx", new_dir)
    assert code == 0 and "Added 6 images" in out, err


def test_nearest_through_an_annoy_forest_finds_what_the_exact_search_finds() -> None:
    rng = np.random.default_rng(0)
    base = l2_normalize(rng.normal(size=(3000, 32)))
    queries = l2_normalize(base[:50] + 0.05 * rng.normal(size=(50, 32)))
    forest = build_index(base[:2500], n_trees=20, seed=1)
    eps = float(to_distance(0.9))
    exact = nearest(Embeddings(base), Embeddings(queries), k=5, eps=eps)
    mixed = nearest(Embeddings(base), Embeddings(queries), k=5, eps=eps, forest=forest, forest_rows=2500)
    assert all(len(rows) and rows[0] == q for q, (rows, _) in enumerate(exact))
    agree = sum(set(a[0].tolist()) == set(b[0].tolist()) for a, b in zip(exact, mixed, strict=True))
    assert agree >= 48
