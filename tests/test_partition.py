"""Whole-collection grouping (dedup.partition): agglomerative / kmeans on generated images with obvious
clusters, ``--clusters auto``, the elbow of a curve, and the clusters.csv written from it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dedup.config import load_config
from dedup.embeddings import Embeddings, l2_normalize
from dedup.errors import ConfigError
from dedup.metrics import clustering_scores
from dedup.partition import _link_components, cluster_embeddings, cut_tree, knee, relabel_by_size
from dedup.pipeline import cluster_collection, find_duplicates
from dedup.report import Report, from_result
from dedup.report.files import clusters_csv

from imagegen import write_families

SIZES = (6, 5, 4)  # planted clusters of different sizes (write_families' default), numbered by size


def _scan(root: Path, **group: object) -> tuple[dict[str, object], object]:
    overrides = {"features.extractor": "phash", **{f"group.{k}": v for k, v in group.items()}}
    cfg = load_config(overrides=overrides)
    result = cluster_collection(find_duplicates([root], cfg), cfg)
    return from_result(result).to_dict(), result


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
    assert knee([2, 3, 4], [10.0, 1.0, 0.5]) == 1 and knee([2, 3], [1.0, 0.5]) is None
    assert knee([0, 1, 2, 3], [0.0, 0.1, 0.2, 1.0]) == 2  # a rising curve (the k-distance of tune)
    assert knee([0, 1, 2], [1.0, 1.0, 1.0]) is None  # flat: no elbow


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


def _knee(values: list[float]) -> int | None:
    return knee(range(len(values)), values)


def test_knee_of_rising_curves_hand_cases() -> None:
    """The k-distance curve of ``dedup tune``: rising, the elbow is the last point before the jump."""
    assert _knee([0.0, 0.0, 0.0, 1.0]) == 2  # flat, then a jump: the last flat point
    assert _knee([0.0, 0.1, 0.1, 0.1, 0.9, 1.0]) == 3
    assert _knee([0.0, 0.5, 1.0]) is None  # a straight line has no elbow
    assert _knee([0.0, 0.9, 1.0]) is None  # concave: nothing below the chord
    assert _knee([0.3, 0.3, 0.3]) is None  # flat
    assert _knee([0.0, 1.0]) is None  # too short


# ---------------------------------------------------------------------------------- clusters.csv / names


def test_clusters_csv_lists_every_image_with_its_distance_to_centre(families) -> None:
    root, truth = families
    report, result = _scan(root, method="kmeans", clusters=3)
    rows = list(csv.DictReader(io.StringIO(clusters_csv(Report.from_dict(report)))))
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
