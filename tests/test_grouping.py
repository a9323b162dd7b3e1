"""Tests of whole-collection grouping: agglomerative / kmeans on generated images with obvious clusters,
``--clusters auto``, clusters.csv, names.yaml (rename, clash, missing id) and the ``dedup group`` CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from typer.testing import CliRunner

from dedup import actions
from dedup.cli import app
from dedup.cluster import _link_components, cluster_embeddings, cut_tree, elbow, relabel_by_size
from dedup.config import load_config
from dedup.embeddings import Embeddings, l2_normalize
from dedup.errors import ActionError, ConfigError, InputError
from dedup.metrics import clustering_scores
from dedup.pipeline import cluster_collection, find_duplicates
from dedup.report import clusters_csv, to_dict

from helpers import tree_state
from imagegen import write_families

runner = CliRunner()
SIZES = (6, 5, 4)  # planted clusters of different sizes (write_families' default), numbered by size


@pytest.fixture
def families(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    root = tmp_path / "photos"
    return root, write_families(root)


def _scan(root: Path, **group: object) -> tuple[dict[str, object], object]:
    overrides = {"features.extractor": "phash", **{f"group.{k}": v for k, v in group.items()}}
    cfg = load_config(overrides=overrides)
    result = cluster_collection(find_duplicates([root], cfg), cfg)
    return to_dict(result), result


def _labels(report: dict, truth: dict[str, int]) -> tuple[list[int], list[int]]:
    found = {m["path"]: c["id"] for c in report["clusters"] for m in c["members"]}
    paths = sorted(truth)
    return [truth[p] for p in paths], [found[p] for p in paths]


# ------------------------------------------------------------------------------------------ library


@pytest.mark.parametrize(
    "group",
    [
        {"method": "kmeans", "clusters": 3},
        {"method": "agglomerative", "clusters": 3},
        {"method": "agglomerative", "clusters": 3, "linkage": "complete"},
        {"method": "agglomerative", "distance_threshold": 0.4},
        {"method": "agglomerative", "clusters": 3, "exact_max": 5},  # Annoy kNN connectivity
        {"method": "kmeans", "clusters": 3, "minibatch_above": 5},  # MiniBatchKMeans
    ],
)
def test_each_method_recovers_planted_families(families, group) -> None:
    root, truth = families
    report, result = _scan(root, **group)
    assert result.clustering is not None
    truth_labels, pred = _labels(report, truth)
    assert clustering_scores(truth_labels, pred)["adjusted_rand"] == pytest.approx(1.0)
    # every image is in exactly one cluster; numbered by size, largest first
    assert sorted(m["path"] for c in report["clusters"] for m in c["members"]) == sorted(truth)
    assert [c["size"] for c in report["clusters"]] == list(SIZES)
    assert [c["name"] for c in report["clusters"]] == ["cluster-0001", "cluster-0002", "cluster-0003"]
    params = report["clustering"]["params"]
    if group.get("exact_max") == 5:
        assert params["connectivity"] == "knn"
    if group.get("minibatch_above") == 5:
        assert params["algorithm"] == "MiniBatchKMeans"
    if "distance_threshold" in group:
        assert params["chosen_by"] == "distance_threshold"


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_clusters_auto_recovers_the_planted_number(tmp_path: Path, method: str) -> None:
    truth = write_families(tmp_path / "p", sizes=(5, 5, 5, 5))
    report, _ = _scan(tmp_path / "p", method=method, clusters="auto", auto_max=8)
    info = report["clustering"]
    assert info["n_clusters"] == 4 and info["params"]["chosen_by"] == "silhouette"
    assert [p["clusters"] for p in info["curve"]] == list(range(2, 9))
    chosen = [p for p in info["curve"] if p["chosen"]]
    assert len(chosen) == 1 and chosen[0]["clusters"] == 4
    assert chosen[0]["silhouette"] == max(
        p["silhouette"] for p in info["curve"] if p["silhouette"] is not None
    )
    assert clustering_scores(*_labels(report, truth))["adjusted_rand"] == pytest.approx(1.0)
    json.dumps(report)  # the report stays JSON-serialisable


def test_synthetic_vectors_auto_and_elbow() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    x = l2_normalize(np.concatenate([c + 0.2 * rng.normal(size=(30, 16)) for c in centres]))
    c = cluster_embeddings(Embeddings(x), method="kmeans", auto_range=(2, 10), silhouette_sample=60)
    assert c.n_clusters == 5 and c.params["elbow"] == 5 and c.params["silhouette_sample"] == 60
    assert c.distances.shape == (150,) and (c.distances >= 0).all() and (c.distances < 0.5).all()
    assert elbow([2, 3, 4], [10.0, 1.0, 0.5]) == 3 and elbow([2, 3], [1.0, 0.5]) is None


def test_relabel_cut_tree_and_component_linking() -> None:
    assert relabel_by_size(np.array([5, 2, 2, 9, 9, 9, 5])).tolist() == [1, 2, 2, 0, 0, 0, 1]
    children = np.array([[0, 1], [2, 3], [4, 5]])  # 4 leaves: (0,1)->4, (2,3)->5, (4,5)->6
    assert cut_tree(children, 4, 2).tolist() == [0, 0, 1, 1]
    assert len(set(cut_tree(children, 4, 4).tolist())) == 4
    vectors = l2_normalize(np.eye(6)[[0, 0, 1, 1, 2, 2]] + 0.01)
    graph = sp.csr_matrix(([1.0] * 6, ([0, 1, 2, 3, 4, 5], [1, 0, 3, 2, 5, 4])), shape=(6, 6))
    linked = _link_components(vectors, graph)
    assert connected_components(linked, directed=False)[0] == 1
    assert linked.nnz <= graph.nnz + 2 * 3  # at most one new edge (both ways) per component per round


def test_invalid_combinations_are_config_errors(families) -> None:
    root, _ = families
    cfg = load_config(overrides={"features.extractor": "phash"})
    result = find_duplicates([root], cfg)
    for overrides, needle in [
        ({"group.method": "dbscan"}, "dbscan"),
        ({"group.method": "kmeans", "group.distance_threshold": 0.3}, "agglomerative only"),
        ({"group.method": "agglomerative", "group.distance_threshold": 0.3, "group.clusters": 3}, "not both"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            cluster_collection(result, load_config(overrides={"features.extractor": "phash", **overrides}))
    with pytest.raises(ConfigError, match="group.clusters: expected an integer or 'auto'"):
        load_config(overrides={"group.clusters": "many"})


def test_more_clusters_than_images_are_clamped() -> None:
    x = l2_normalize(np.eye(3))
    c = cluster_embeddings(Embeddings(x), method="kmeans", clusters=10)
    assert c.n_clusters == 3 and c.params["requested_clusters"] == 10


# ---------------------------------------------------------------------------------- clusters.csv / names


def test_clusters_csv_lists_every_image_with_its_distance_to_centre(families) -> None:
    root, truth = families
    report, result = _scan(root, method="kmeans", clusters=3)
    rows = list(csv.DictReader(io.StringIO(clusters_csv(report))))
    assert [*rows[0]] == ["path", "cluster", "name", "distance_to_centre"]
    assert sorted(r["path"] for r in rows) == sorted(truth)
    by_path = {r["path"]: r for r in rows}
    vectors = result.embeddings.vectors.astype(np.float64)
    for i, image in enumerate(result.images):  # recompute the distance to the normalised cluster mean
        row = by_path[image.path]
        members = [j for j, im in enumerate(result.images) if by_path[im.path]["cluster"] == row["cluster"]]
        centre = vectors[members].mean(axis=0)
        centre /= np.linalg.norm(centre)
        assert float(row["distance_to_centre"]) == pytest.approx(1 - vectors[i] @ centre, abs=1e-5)
        assert row["name"] == f"cluster-{int(row['cluster']):04d}"


def _report(n: int = 3) -> dict:
    return {
        "clusters": [{"id": i, "name": f"cluster-{i:04d}", "size": 1, "members": []} for i in range(1, n + 1)]
    }


def test_names_rename_clash_and_missing_ids(tmp_path: Path) -> None:
    names_file = tmp_path / "names.yaml"
    names_file.write_text('1: "Shirts/red"\n2: shirts/RED\n4: ghost\n5: ""\n')
    names = actions.load_names(names_file)
    assert names == {1: "Shirts/red", 2: "shirts/RED", 4: "ghost"}
    named, notes = actions.with_names(_report(3), names)
    assert any("4" in n and "ignored" in n for n in notes)  # id not in this run
    assert any("clusters 3 have no name" in n for n in notes)  # id missing from names.yaml
    folders, notes = actions.cluster_folders(named["clusters"])
    # sanitised; two clusters named alike (case-insensitively) by the user share one folder
    assert folders == ["Shirts_red", "Shirts_red", "cluster-0003"]
    assert any("both named" in n for n in notes)


def test_generated_name_clashing_with_a_user_name_gets_a_suffix() -> None:
    named, _ = actions.with_names(_report(3), {1: "cluster-0003", 2: "..", 3: "ok"})
    folders, notes = actions.cluster_folders(named["clusters"])
    assert folders == ["cluster-0003", "_.", "ok"]
    named, _ = actions.with_names(_report(3), {1: "cluster-0002"})
    folders, notes = actions.cluster_folders(named["clusters"])
    assert folders == ["cluster-0002", "cluster-0002 (2)", "cluster-0003"]
    assert any("taken by cluster 1" in n for n in notes)
    assert actions.sanitize_folder_name("  \t ") is None and actions.sanitize_folder_name("a\nb") == "a b"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("- a\n- b\n", "must map cluster ids"), ("x: a\n", "not a cluster id"), ("1: [a]\n", "must be text")],
)
def test_bad_names_files_are_input_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "names.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=needle):
        actions.load_names(path)
    with pytest.raises(InputError, match="does not exist"):
        actions.load_names(tmp_path / "missing.yaml")
    with pytest.raises(ActionError, match="--names needs a clustering"):
        actions.with_names({"groups": []}, {1: "a"})


def test_write_names_round_trips_and_never_overwrites(tmp_path: Path) -> None:
    report = {
        "clusters": [{"id": 1, "name": 'odd: "name" #1', "size": 2, "members": [{"path": "/x/a b.jpg"}]}]
    }
    first = actions.write_names(report, tmp_path)
    assert first == tmp_path / "names.yaml" and actions.load_names(first) == {1: 'odd: "name" #1'}
    assert actions.write_names(report, tmp_path) == first  # same text: not written again
    first.write_text("1: edited\n")
    second = actions.write_names(report, tmp_path)
    assert second == tmp_path / "names (1).yaml" and first.read_text() == "1: edited\n"


# ------------------------------------------------------------------------------------------------ CLI


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_kmeans_then_names_then_undo(families, tmp_path: Path) -> None:
    root, truth = families
    before = tree_state(root)
    out = tmp_path / "sorted"
    code, stdout, err = invoke(
        "group", root, "--to", out, "--method", "kmeans", "--clusters", "3", "-f", "phash"
    )
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["cluster-0001", "cluster-0002", "cluster-0003"]
    counts = [len(os.listdir(out / f)) for f in folders]
    assert counts == list(SIZES)
    for f in folders:  # each folder holds exactly one family
        assert len({name.split("_")[0] for name in os.listdir(out / f)}) == 1
    assert "cluster-0001" in err and "kmeans: 3 clusters" in err
    rows = list(csv.DictReader((out / "clusters.csv").open()))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    assert actions.load_names(out / "names.yaml") == {1: "cluster-0001", 2: "cluster-0002", 3: "cluster-0003"}
    assert tree_state(root) == before  # copies: the originals are untouched

    (manifest,) = out.glob("dedup-group-*.jsonl")
    code, _, err = invoke("undo", manifest)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(["clusters.csv", "names.yaml", manifest.name])
    assert tree_state(root) == before

    names = tmp_path / "my-names.yaml"
    names.write_text((out / "names.yaml").read_text().replace('"cluster-0002"', '"big cats"'))
    out2 = tmp_path / "named"
    code, _, err = invoke(
        "group", root, "--to", out2, "-m", "kmeans", "-k", "3", "-f", "phash", "--names", names, "--move"
    )
    assert code == 0, err
    assert sorted(p.name for p in out2.iterdir() if p.is_dir()) == [
        "big cats",
        "cluster-0001",
        "cluster-0003",
    ]
    assert len(os.listdir(out2 / "big cats")) == SIZES[1]
    assert not any(root.glob("*.jpg"))  # moved
    (manifest,) = out2.glob("dedup-group-*.jsonl")
    assert invoke("undo", manifest)[0] == 0
    assert tree_state(root) == before


def test_cli_auto_prints_the_curve_and_dry_run_touches_nothing(families, tmp_path: Path) -> None:
    root, _ = families
    before = tree_state(tmp_path)
    code, stdout, err = invoke(
        "group", root, "--to", tmp_path / "o", "--method", "agglomerative", "--linkage", "complete",
        "-f", "phash", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "Choosing the number of clusters" in err and "chosen (best silhouette)" in err
    plan = json.loads(stdout)
    assert {Path(op["dst"]).parent.name for op in plan["operations"]} == {
        "cluster-0001",
        "cluster-0002",
        "cluster-0003",
    }
    assert tree_state(tmp_path) == before


def test_cli_group_option_errors(families, tmp_path: Path) -> None:
    root, _ = families
    code, _, err = invoke(
        "group", root, "--to", tmp_path / "o", "--names", tmp_path / "n.yaml", "-f", "phash"
    )
    assert code == 1 and "--names" in err
    code, _, err = invoke(
        "group", "--to", tmp_path / "o", "--method", "kmeans", "--from-report", tmp_path / "r"
    )
    assert code == 1 and "features" in err
    code, _, err = invoke("group", root, "--to", tmp_path / "o", "--method", "spectral")
    assert code == 1 and "allowed values: dbscan, agglomerative, kmeans" in err
    code, _, err = invoke(
        "group", root, "--to", tmp_path / "o", "-m", "kmeans", "--distance-threshold", "0.2"
    )
    assert code == 1 and "agglomerative only" in err


def test_dbscan_group_is_unchanged(families, tmp_path: Path) -> None:
    root, _ = families
    out = tmp_path / "g"
    code, _, err = invoke("group", root, "--to", out, "-f", "phash")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert all(n.startswith(("group-", "unique", "dedup-group-")) for n in names)
    assert not (out / "clusters.csv").exists() and not (out / "names.yaml").exists()
