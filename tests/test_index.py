import numpy as np
import pytest
import scipy.sparse as sp

from dedup.cluster import dbscan_labels
from dedup.embeddings import Embeddings, convert
from dedup.index import build_index, neighbour_graph


def unit(rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("sim", "cos", "ang"),
    [(1.0, 0.0, 0.0), (0.0, 1.0, np.sqrt(2.0)), (-1.0, 2.0, 2.0), (0.5, 0.5, 1.0), (0.9, 0.1, np.sqrt(0.2))],
)
def test_convert_between_all_units(sim, cos, ang):
    assert convert(sim, "similarity", "cosine") == pytest.approx(cos)
    assert convert(sim, "similarity", "angular") == pytest.approx(ang)
    assert convert(cos, "cosine", "similarity") == pytest.approx(sim)
    assert convert(ang, "angular", "similarity") == pytest.approx(sim)
    assert convert(ang, "angular", "cosine") == pytest.approx(cos)
    assert convert(cos, "cosine", "angular") == pytest.approx(ang)


def test_convert_arrays_and_bad_units():
    out = convert(np.array([1.0, 0.0]), "similarity", "cosine")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 1.0])
    with pytest.raises(ValueError):
        convert(0.5, "similarity", "euclid")  # type: ignore[arg-type]


def test_convert_matches_annoy_angular_distance():
    rng = np.random.default_rng(1)
    v = unit(rng.normal(size=(2, 16)))
    index = build_index(v, n_trees=2, seed=1)
    annoy_dist = index.get_distance(0, 1)
    sim = float(v[0] @ v[1])
    assert convert(annoy_dist, "angular", "similarity") == pytest.approx(sim, abs=1e-5)


def test_zero_distance_survives_sparse_storage_and_groups_identical_images():
    # rows 0 and 1 are exactly identical; 2 is close to neither
    v = np.zeros((5, 4), dtype=np.float32)
    v[0, 0] = v[1, 0] = 1.0
    v[2, 1] = v[3, 2] = v[4, 3] = 1.0
    graph = neighbour_graph(Embeddings(v), eps=0.05, k=3, n_trees=4, seed=0)
    assert sp.issparse(graph)
    assert graph.nnz == 2  # the pair, stored both ways
    assert graph[0, 1] == 0.0 and graph[1, 0] == 0.0
    assert graph.has_sorted_indices
    # the zero is an explicit stored entry (an absent entry would mean "not a neighbour")
    row0 = slice(graph.indptr[0], graph.indptr[1])
    assert list(graph.indices[row0]) == [1] and list(graph.data[row0]) == [0.0]
    labels = dbscan_labels(graph, eps=0.05, min_samples=2)
    assert labels[0] == labels[1] != -1
    assert list(labels[2:]) == [-1, -1, -1]


def test_graph_keeps_only_pairs_within_eps_and_is_symmetric():
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(20, 32)))
    near = unit(base + 0.05 * rng.normal(size=base.shape))
    v = np.vstack([base, near]).astype(np.float32)
    eps = 0.05
    graph = neighbour_graph(Embeddings(v), eps=eps, k=5, n_trees=10, seed=3)
    assert (graph != graph.T).nnz == 0
    assert graph.data.max() <= eps
    dense = 1.0 - v.astype(np.float64) @ v.T.astype(np.float64)
    for i, j in zip(*graph.nonzero(), strict=True):
        assert graph[i, j] == pytest.approx(dense[i, j], abs=1e-6)
    # every planted pair (i, i+20) is within eps and found
    for i in range(20):
        if dense[i, i + 20] <= eps:
            assert graph[i, i + 20] == pytest.approx(dense[i, i + 20], abs=1e-6)


def test_graph_of_tiny_inputs():
    assert neighbour_graph(Embeddings(np.empty((0, 8), np.float32)), eps=0.1, k=3, n_trees=2).shape == (0, 0)
    assert neighbour_graph(Embeddings(unit([[1.0, 0.0]])), eps=0.1, k=3, n_trees=2).shape == (1, 1)


def test_same_seed_same_graph():
    rng = np.random.default_rng(5)
    v = unit(rng.normal(size=(200, 16)))
    a = neighbour_graph(Embeddings(v), eps=0.5, k=5, n_trees=3, seed=7)
    b = neighbour_graph(Embeddings(v), eps=0.5, k=5, n_trees=3, seed=7)
    assert (a != b).nnz == 0


def test_mirrored_vectors_make_flipped_copies_neighbours():
    # image 1 is the mirror image of image 0: its vector equals image 0's mirrored vector
    v = np.zeros((3, 4), dtype=np.float32)
    m = np.zeros((3, 4), dtype=np.float32)
    v[0, 0] = m[1, 0] = 1.0
    v[1, 1] = m[0, 1] = 1.0
    v[2, 2] = m[2, 3] = 1.0
    plain = neighbour_graph(Embeddings(v), eps=0.05, k=2, n_trees=3)
    assert plain.nnz == 0
    emb = Embeddings(v, m)
    graph = neighbour_graph(emb, eps=0.05, k=2, n_trees=3)
    assert graph.nnz == 2 and graph[0, 1] == 0.0
    sim, flipped = emb.similarity(np.array([0, 0]), np.array([1, 2]))
    np.testing.assert_allclose(sim, [1.0, 0.0])
    assert flipped.tolist() == [True, False]


def _planted(n: int, seed: int = 0) -> Embeddings:
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n // 2, 64)))
    near = unit(base + rng.standard_normal(base.shape).astype(np.float32) * 0.03)
    vectors = np.concatenate([base, near])
    mirrored = unit(vectors + rng.standard_normal(vectors.shape).astype(np.float32) * 0.5)
    return Embeddings(vectors, mirrored)


@pytest.mark.parametrize("mirrored", [False, True])
def test_graph_is_the_same_whatever_the_chunking_and_processes(mirrored):
    emb = _planted(600)
    if not mirrored:
        emb = Embeddings(emb.vectors)
    kw = {"eps": 0.2, "k": 5, "n_trees": 10, "seed": 3}
    whole = neighbour_graph(emb, chunk=10_000, **kw)
    assert whole.nnz > 0
    variants = ({"chunk": 7}, {"chunk": 128, "n_jobs": 1}, {"chunk": 100, "n_jobs": 2, "processes_from": 1})
    for extra in variants:
        other = neighbour_graph(emb, **kw, **extra)
        assert (other != whole).nnz == 0, extra
        np.testing.assert_array_equal(other.indptr, whole.indptr)
        np.testing.assert_array_equal(other.indices, whole.indices)
