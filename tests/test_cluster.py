from dataclasses import dataclass

import numpy as np
import pytest

from dedup.cluster import dbscan_labels, form_groups
from dedup.embeddings import Embeddings
from dedup.index import neighbour_graph


@dataclass(frozen=True)
class Img:
    path: str
    size: int = 100
    mtime: float = 0.0
    width: int = 10
    height: int = 10


def chain(n: int, step_deg: float) -> np.ndarray:
    """Unit vectors on a circle, each ``step_deg`` from the previous: neighbours alike, ends far apart."""
    ang = np.radians(step_deg) * np.arange(n)
    return np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)


def test_chaining_guard_splits_members_unlike_the_kept_image():
    # 6 images 10 degrees apart: each neighbour pair has similarity cos(10deg)=0.985, but the ends are
    # 50 degrees apart (similarity 0.64). DBSCAN links them all into one cluster.
    v = chain(6, 10.0)
    threshold = 0.98
    eps = 1 - threshold
    graph = neighbour_graph(Embeddings(v), eps=eps, k=5, n_trees=5)
    labels = dbscan_labels(graph, eps=eps, min_samples=2)
    assert len(set(labels.tolist())) == 1 and labels[0] != -1  # the chain really is one DBSCAN cluster
    imgs = [Img(f"/{i}.jpg") for i in range(6)]  # all ties: keep = first path = image 0
    groups, splits = form_groups(labels, Embeddings(v), graph, imgs, threshold=threshold, policy="path")
    assert splits > 0
    for g in groups:
        for m, s in zip(g.members, g.similarities, strict=True):
            assert float(v[m] @ v[g.keep]) >= threshold - 1e-6
            assert s == pytest.approx(float(v[m] @ v[g.keep]), abs=1e-6)
    grouped = sorted(m for g in groups for m in g.members)
    assert len(grouped) == len(set(grouped))  # nobody in two groups
    assert groups[0].members[0] == groups[0].keep == 0


def test_groups_sorted_by_size_and_members_by_similarity():
    rng = np.random.default_rng(0)
    a = rng.normal(size=8)
    b = rng.normal(size=8)
    rows = [a, a + 0.01, a + 0.02, b, b + 0.01, rng.normal(size=8)]
    v = np.asarray(rows, dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    imgs = [Img(f"/{i}.jpg", width=10 + i) for i in range(6)]
    graph = neighbour_graph(Embeddings(v), eps=0.01, k=5, n_trees=5)
    labels = dbscan_labels(graph, eps=0.01, min_samples=2)
    groups, splits = form_groups(labels, Embeddings(v), graph, imgs, threshold=0.99, policy="resolution")
    assert splits == 0
    assert [len(g.members) for g in groups] == [3, 2]
    assert groups[0].keep == 2 and groups[1].keep == 4  # largest resolution
    assert groups[0].similarities[0] == 1.0
    assert list(groups[0].similarities[1:]) == sorted(groups[0].similarities[1:], reverse=True)


def test_dbscan_labels_equal_scikit_learns_on_random_sparse_graphs():
    import scipy.sparse as sp
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        m = int(rng.integers(0, 3 * n + 1))
        r, c = rng.integers(0, n, m), rng.integers(0, n, m)
        d = rng.choice([0.0, 0.05, 0.1, 0.3], m)  # explicit zeros are neighbours too
        r, c, d = r[r != c], c[r != c], d[r != c]
        graph = sp.coo_matrix(
            (np.concatenate([d, d]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)
        ).tocsr()
        for min_samples in (2, 3, 4):  # 3 and 4 have border points, which join the lowest cluster
            for eps in (0.05, 0.2):
                ours = dbscan_labels(graph, eps=eps, min_samples=min_samples)
                theirs = DBSCAN(eps=eps + 1e-6, min_samples=min_samples, metric="precomputed").fit(graph)
                np.testing.assert_array_equal(ours, theirs.labels_)
