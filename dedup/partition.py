"""Every image in one cluster (``dedup group --method agglomerative|kmeans``): agglomerative clustering,
k-means, and choosing the number of clusters automatically (silhouette, with the inertia curve's elbow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import connected_components

from dedup.embeddings import TOLERANCE, Embeddings, to_distance
from dedup.index import neighbour_graph

LINKAGES = ("average", "complete")

# Merging past every real distance: AgglomerativeClustering then builds the whole tree (children_), which
# :func:`cut_tree` cuts at any number of clusters without refitting.
_NO_THRESHOLD = 1e12


@dataclass(frozen=True)
class Clustering:
    """Every image in exactly one cluster (``dedup group --method agglomerative|kmeans``).

    Attributes:
        labels: int array of shape (n_images,): cluster 0 is the largest, then by decreasing size (ties: the
            cluster holding the lower image index first).
        distances: float64 array of shape (n_images,): cosine distance of each image to its cluster's centre
            (the L2-normalised mean of the cluster's vectors).
        method: "agglomerative" or "kmeans".
        params: what ran: ``n_clusters``, ``linkage``, ``distance_threshold``, ``connectivity`` ("full" or
            "knn"), ``algorithm`` ("KMeans" / "MiniBatchKMeans"), ``chosen_by`` ("given", "silhouette",
            "distance_threshold"), ...
        curve: for ``clusters: auto``, one dict per number of clusters tried: ``clusters``,
            ``silhouette`` (cosine, on a subsample; None when undefined), ``inertia`` (sum of squared
            Euclidean distances of the unit vectors to their cluster means), ``elbow`` (True at the elbow of
            the inertia curve), ``chosen``.
    """

    labels: np.ndarray
    distances: np.ndarray
    method: str
    params: dict[str, Any]
    curve: tuple[dict[str, Any], ...] = ()

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 so that 0 is the largest cluster (ties: lowest first member index first)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.empty(0, dtype=np.int64)
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda j: (-counts[j], first[j]))
    mapping = np.empty(len(uniq), dtype=np.int64)
    mapping[order] = np.arange(len(uniq))
    return mapping[np.searchsorted(uniq, labels)]


def centre_distances(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine distance of each row of ``vectors`` (unit rows) to the normalised mean of its cluster.

    Returns:
        float64 array of shape (n,), values in [0, 2].
    """
    v = np.asarray(vectors, dtype=np.float64)
    if len(v) == 0:
        return np.empty(0, dtype=np.float64)
    k = int(labels.max()) + 1
    sums = np.zeros((k, v.shape[1]))
    np.add.at(sums, labels, v)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centres = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    sim = np.einsum("ij,ij->i", v, centres[labels])
    dist = np.asarray(to_distance(sim), dtype=np.float64)
    dist[dist < TOLERANCE] = 0.0
    return dist


def inertia(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared Euclidean distances of the rows to their cluster means (KMeans' inertia)."""
    v = np.asarray(vectors, dtype=np.float64)
    k = int(labels.max()) + 1
    sums = np.zeros((k, v.shape[1]))
    np.add.at(sums, labels, v)
    counts = np.bincount(labels, minlength=k)[:, None]
    means = sums / np.maximum(counts, 1)
    return float(((v - means[labels]) ** 2).sum())


def knn_connectivity(
    embeddings: Embeddings, *, k: int, n_trees: int, search_k: int = -1, seed: int = 42
) -> sp.csr_matrix:
    """Symmetric 0/1 connectivity matrix of each image's ``k`` nearest neighbours (Annoy), made connected.

    Built with :func:`dedup.index.neighbour_graph` at the loosest radius (every neighbour found is kept).
    If the graph falls apart into several components, each component is joined to the component whose
    centroid is most similar, through the members closest to the two centroids, until one component is
    left -- so scikit-learn does not complete it with distances between all pairs of components.

    Returns:
        csr_matrix of shape (n, n) with O(n * k) stored entries.
    """
    n = len(embeddings)
    graph = neighbour_graph(embeddings, eps=2.0, k=k, n_trees=n_trees, search_k=search_k, seed=seed)
    graph = sp.csr_matrix((np.ones(graph.nnz), graph.indices, graph.indptr), shape=(n, n))
    return _link_components(np.asarray(embeddings.vectors, dtype=np.float64), graph)


def _link_components(vectors: np.ndarray, graph: sp.csr_matrix) -> sp.csr_matrix:
    """Add one edge from every component to its most similar component (by centroid) until connected."""
    while True:
        n_comp, comp = connected_components(graph, directed=False)
        if n_comp <= 1:
            return graph
        sums = np.zeros((n_comp, vectors.shape[1]))
        np.add.at(sums, comp, vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
        own = np.einsum("ij,ij->i", vectors, centroids[comp])
        reps = np.empty(n_comp, dtype=np.int64)
        for c in range(n_comp):  # the member closest to its component's centroid
            members = np.flatnonzero(comp == c)
            reps[c] = members[np.argmax(own[members])]
        sims = centroids @ centroids.T
        np.fill_diagonal(sims, -np.inf)
        nearest = sims.argmax(axis=1)
        rows, cols = reps, reps[nearest]
        extra = sp.coo_matrix(
            (np.ones(2 * n_comp), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
            shape=graph.shape,
        )
        graph = (graph + extra).tocsr()
        graph.data[:] = 1.0


def cut_tree(children: np.ndarray, n_samples: int, n_clusters: int) -> np.ndarray:
    """Labels after the first ``n_samples - n_clusters`` merges of a full agglomerative tree.

    Args:
        children: ``AgglomerativeClustering.children_``, shape (n_samples - 1, 2), in merge order.
        n_samples: number of leaves.
        n_clusters: clusters wanted (1..n_samples).

    Returns:
        int array of shape (n_samples,), labels 0..n_clusters-1 (not yet ordered by size).
    """
    parent = np.arange(2 * n_samples - 1)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for step in range(n_samples - n_clusters):
        node = n_samples + step
        a, b = children[step]
        parent[find(int(a))] = node
        parent[find(int(b))] = node
    roots = np.array([find(i) for i in range(n_samples)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def agglomerative_tree(
    vectors: np.ndarray,
    *,
    linkage: str = "average",
    connectivity: sp.spmatrix | None = None,
    n_clusters: int | None = None,
    distance_threshold: float | None = None,
) -> Any:
    """A fitted ``sklearn.cluster.AgglomerativeClustering`` on cosine distance.

    Without ``connectivity`` scikit-learn hands the data to ``scipy.cluster.hierarchy.linkage``, which
    stores every pairwise distance (n*(n-1)/2 float64: 100 MB at 5,000 images, 10 GB at 50,000) and takes
    O(n^2) time or more. With a sparse ``connectivity`` (see :func:`knn_connectivity`) only the distances
    along its edges are computed and merges follow the graph: memory O(edges).

    With neither ``n_clusters`` nor ``distance_threshold`` the whole tree is built (cut it with
    :func:`cut_tree`).
    """
    from sklearn.cluster import AgglomerativeClustering

    if linkage not in LINKAGES:
        raise ValueError(f"linkage {linkage!r}; allowed: {', '.join(LINKAGES)}")
    full = n_clusters is None and distance_threshold is None
    model = AgglomerativeClustering(
        n_clusters=n_clusters,
        distance_threshold=_NO_THRESHOLD if full else distance_threshold,
        metric="cosine",
        linkage=linkage,
        connectivity=connectivity,
        compute_full_tree=True if n_clusters is None else "auto",
    )
    return model.fit(np.asarray(vectors, dtype=np.float64))


def kmeans_labels(
    vectors: np.ndarray, n_clusters: int, *, seed: int = 0, minibatch_above: int = 10_000
) -> tuple[np.ndarray, str]:
    """``KMeans`` (``MiniBatchKMeans`` above ``minibatch_above`` images) on unit vectors.

    On L2-normalised vectors squared Euclidean distance is ``2 * cosine distance``, so this is k-means in
    cosine terms (apart from the centres not being renormalised).

    Returns:
        ``(labels, algorithm)``: int array of shape (n,), and "KMeans" or "MiniBatchKMeans".
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(vectors, dtype=np.float64)
    if len(x) > minibatch_above:
        model: Any = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=2048)
        algorithm = "MiniBatchKMeans"
    else:
        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
        algorithm = "KMeans"
    return np.asarray(model.fit_predict(x), dtype=np.int64), algorithm


def silhouette(vectors: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> float | None:
    """Mean silhouette (cosine distance) over the images ``sample``; None when undefined (one cluster, or
    every sampled image alone in its cluster)."""
    from sklearn.metrics import silhouette_score

    lab = labels[sample]
    k = len(np.unique(lab))
    if k < 2 or k > len(sample) - 1:
        return None
    return float(silhouette_score(np.asarray(vectors)[sample], lab, metric="cosine"))


def knee(x: ArrayLike, y: ArrayLike) -> int | None:
    """Index of the elbow (knee) of a convex curve, rising or falling: the point farthest below the chord
    from its first to its last point, both axes scaled to [0, 1] (the Kneedle idea, Satopaa et al. 2011).

    Used for the inertia curve of ``clusters: auto`` and for ``dedup tune``'s k-distance curve.

    Returns:
        The index, or None for fewer than three points, a flat curve, or no point below the chord.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if len(ys) < 3 or abs(ys[-1] - ys[0]) <= TOLERANCE:
        return None
    xs = (xs - xs[0]) / (xs[-1] - xs[0]) if xs[-1] != xs[0] else np.linspace(0.0, 1.0, len(xs))
    rising = (ys - ys[0]) / (ys[-1] - ys[0])  # 0 at the first point, 1 at the last
    gap = np.sign(ys[-1] - ys[0]) * (xs - rising)
    at = int(np.argmax(gap))
    return at if gap[at] > 1e-9 else None


def cluster_embeddings(
    embeddings: Embeddings,
    *,
    method: str,
    clusters: int | str = "auto",
    distance_threshold: float = 0.0,
    linkage: str = "average",
    exact_max: int = 5000,
    minibatch_above: int = 10_000,
    auto_range: tuple[int, int] = (2, 20),
    silhouette_sample: int = 2000,
    seed: int = 0,
    neighbours: int = 20,
    n_trees: int = 20,
    search_k: int = -1,
    index_seed: int = 42,
) -> Clustering:
    """Put every image into one cluster with agglomerative clustering or k-means (on ``embeddings.vectors``;
    mirror-image vectors are not used).

    Args:
        embeddings: the images' unit vectors.
        method: "agglomerative" or "kmeans".
        clusters: number of clusters (more than the images are clamped), or "auto": every number in
            ``auto_range`` is tried and the one with the best silhouette (cosine, on a random subsample of
            ``silhouette_sample`` images, the same for every number) wins; the inertia curve and its elbow are
            reported beside it.
        distance_threshold: agglomerative only; > 0 stops merging at this cosine distance (then
            ``clusters`` must be "auto", i.e. not given).
        linkage: "average" or "complete" (agglomerative).
        exact_max: above this many images agglomerative merges follow the Annoy k-nearest-neighbour graph
            (``neighbours``, ``n_trees``, ``search_k``, ``index_seed``) -- memory O(n*k) instead of O(n^2).
        minibatch_above: above this many images k-means is ``MiniBatchKMeans``.
        seed: seed of k-means and of the silhouette subsample.

    Returns:
        A :class:`Clustering` (labels ordered by cluster size).

    Raises:
        ValueError: unknown method, or both a number of clusters and a distance threshold.
    """
    if method not in ("agglomerative", "kmeans"):
        raise ValueError(f"method {method!r}; allowed: agglomerative, kmeans")
    vectors = np.asarray(embeddings.vectors, dtype=np.float64)
    n = len(vectors)
    given = None if clusters == "auto" else int(clusters)
    if given is not None and distance_threshold > 0:
        raise ValueError("give either a number of clusters or a distance threshold, not both")
    if method == "kmeans" and distance_threshold > 0:
        raise ValueError("a distance threshold applies to agglomerative clustering only")
    params: dict[str, Any] = {"requested_clusters": clusters}
    if n < 2:
        labels = np.zeros(n, dtype=np.int64)
        params.update(n_clusters=min(n, 1), chosen_by="too few images")
        return Clustering(labels, centre_distances(vectors, labels), method, params)

    fit: Any  # n_clusters -> labels
    if method == "agglomerative":
        connectivity = None
        if n > exact_max:
            connectivity = knn_connectivity(
                embeddings, k=neighbours, n_trees=n_trees, search_k=search_k, seed=index_seed
            )
        params.update(linkage=linkage, connectivity="full" if connectivity is None else "knn")
        if connectivity is not None:
            params["neighbours"] = neighbours
        if distance_threshold > 0:
            model = agglomerative_tree(
                vectors, linkage=linkage, connectivity=connectivity, distance_threshold=distance_threshold
            )
            labels = relabel_by_size(model.labels_)
            params.update(
                distance_threshold=distance_threshold,
                n_clusters=int(labels.max()) + 1,
                chosen_by="distance_threshold",
            )
            return Clustering(labels, centre_distances(vectors, labels), method, params)
        tree = agglomerative_tree(vectors, linkage=linkage, connectivity=connectivity).children_

        def fit(k: int) -> np.ndarray:
            return cut_tree(tree, n, k)

    else:
        algorithms: list[str] = []

        def fit(k: int) -> np.ndarray:
            labels, algorithm = kmeans_labels(vectors, k, seed=seed, minibatch_above=minibatch_above)
            algorithms.append(algorithm)
            return labels

    curve: list[dict[str, Any]] = []
    if given is not None:
        k = min(given, n)
        labels = fit(k)
        params.update(n_clusters=k, chosen_by="given")
    else:
        lo, hi = auto_range
        ks = list(range(max(2, lo), min(hi, n - 1) + 1)) or [min(2, n)]
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(silhouette_sample, n), replace=False))
        results = {}
        for k in ks:
            lab = fit(k)
            results[k] = lab
            curve.append(
                {
                    "clusters": k,
                    "silhouette": silhouette(vectors, lab, sample),
                    "inertia": inertia(vectors, lab),
                }
            )
        scored = [c for c in curve if c["silhouette"] is not None]
        best = max(scored, key=lambda c: (c["silhouette"], -c["clusters"]))["clusters"] if scored else ks[0]
        at = knee([c["clusters"] for c in curve], [c["inertia"] for c in curve])
        bend = None if at is None else curve[at]["clusters"]
        for c in curve:
            c["chosen"] = c["clusters"] == best
            c["elbow"] = c["clusters"] == bend
        labels = results[best]
        params.update(
            n_clusters=best, chosen_by="silhouette", elbow=bend, silhouette_sample=len(sample), auto_range=ks
        )
    if method == "kmeans":
        params.update(algorithm=algorithms[-1], seed=seed)
    labels = relabel_by_size(labels)
    params["n_clusters"] = int(labels.max()) + 1
    return Clustering(labels, centre_distances(vectors, labels), method, params, tuple(curve))
