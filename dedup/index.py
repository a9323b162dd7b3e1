"""Annoy nearest-neighbour index and the sparse neighbour graph built from it.

Users think in cosine similarity; Annoy's angular metric returns ``sqrt(2 * (1 - cos))``; DBSCAN wants a
distance. :func:`convert` is the one place that converts between these units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from dedup.errors import DedupError

Unit = Literal["similarity", "cosine", "angular"]
ProgressFn = Callable[[str, int, "int | None"], None]

_QUERY_CHUNK = 4096

# Float32 vectors of identical images can differ in the 7th digit; distances this small count as equal.
TOLERANCE = 1e-6
_PAIR_CHUNK = 1 << 16


@dataclass(frozen=True)
class Embeddings:
    """Feature vectors of the scanned images, optionally with those of their mirror images and other views.

    Attributes:
        vectors: float32 array of shape (n_images, dim), L2-normalised rows.
        mirrored: float32 array of the same shape holding the vectors of the horizontally mirrored images,
            or None. When present, two images are as similar as their best match directly or mirrored, so a
            flipped copy counts as a duplicate.
        views: further ``(name, vectors)`` views of every image, e.g. ``("rot90", ...)`` for the images
            rotated by 90 degrees; matched like ``mirrored``. A name containing ``flip`` marks a mirror
            image (e.g. ``vflip``, ``hflip+rot90``).
    """

    vectors: np.ndarray
    mirrored: np.ndarray | None = None
    views: tuple[tuple[str, np.ndarray], ...] = ()

    def __len__(self) -> int:
        return len(self.vectors)

    def concat(self, other: Embeddings) -> Embeddings:
        """The rows of ``self`` followed by those of ``other`` (same extractor and views)."""
        if (self.mirrored is None) != (other.mirrored is None) or [n for n, _ in self.views] != [
            n for n, _ in other.views
        ]:
            raise ValueError("cannot concatenate embeddings with different views")
        mirrored = None if self.mirrored is None else np.concatenate([self.mirrored, other.mirrored])
        views = tuple(
            (n, np.concatenate([a, b])) for (n, a), (_, b) in zip(self.views, other.views, strict=True)
        )
        return Embeddings(np.concatenate([self.vectors, other.vectors]), mirrored, views)

    @property
    def view_names(self) -> tuple[str, ...]:
        """Names of the views :meth:`match` reports: ``identity``, ``hflip`` (the mirror), then ``views``."""
        return ("identity", "hflip", *(name for name, _ in self.views))

    def _others(self) -> list[tuple[int, np.ndarray]]:
        out = [] if self.mirrored is None else [(1, self.mirrored)]
        return out + [(2 + k, vecs) for k, (_, vecs) in enumerate(self.views)]

    def match(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine similarity of the pairs ``(a[i], b[i])`` over every view, and which view gave it.

        Returns:
            ``(similarity, view)``: float64 array of shape (len(a),) in [-1, 1], and an int array of
            indices into :attr:`view_names` (0 = the images as they are; a view wins only when it beats the
            direct match by more than :data:`TOLERANCE`).
        """
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        sim = np.empty(len(a), dtype=np.float64)
        view = np.zeros(len(a), dtype=np.int64)
        v = self.vectors
        others = self._others()
        for start in range(0, len(a), _PAIR_CHUNK):
            s = slice(start, start + _PAIR_CHUNK)
            best = np.einsum("ij,ij->i", v[a[s]], v[b[s]], dtype=np.float64)
            which = np.zeros(len(best), dtype=np.int64)
            for index, o in others:
                other = np.maximum(
                    np.einsum("ij,ij->i", o[a[s]], v[b[s]], dtype=np.float64),
                    np.einsum("ij,ij->i", v[a[s]], o[b[s]], dtype=np.float64),
                )
                better = other > best + TOLERANCE
                best = np.where(better, other, best)
                which[better] = index
            sim[s] = best
            view[s] = which
        return np.clip(sim, -1.0, 1.0), view

    def similarity(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of the pairs ``(a[i], b[i])`` (index arrays of equal length).

        Returns:
            ``(similarity, mirrored)``: float64 array of shape (len(a),) in [-1, 1], and a bool array that is
            True where the best match was between one image and the other's mirror image.
        """
        sim, view = self.match(a, b)
        reflection = np.array(["flip" in name for name in self.view_names], dtype=bool)
        return sim, reflection[view]


def convert(value: float | np.ndarray, source: Unit, target: Unit) -> float | np.ndarray:
    """Convert between cosine similarity, cosine distance and Annoy's angular distance.

    Args:
        value: a number or array in ``source`` units. ``similarity`` is cosine similarity in [-1, 1];
            ``cosine`` is cosine distance ``1 - similarity`` in [0, 2]; ``angular`` is Annoy's angular
            distance ``sqrt(2 * (1 - similarity))`` in [0, 2] (the Euclidean distance of unit vectors).
        source: unit of ``value``.
        target: unit wanted.

    Returns:
        ``value`` in ``target`` units (same shape). Values are clipped to the valid range of the target.
    """
    units = ("similarity", "cosine", "angular")
    if source not in units or target not in units:
        raise ValueError(f"units must be one of {units}, got {source!r} -> {target!r}")
    v = np.asarray(value, dtype=np.float64)
    if source == "similarity":
        sim = v
    elif source == "cosine":
        sim = 1.0 - v
    else:
        sim = 1.0 - v * v / 2.0
    sim = np.clip(sim, -1.0, 1.0)
    if target == "similarity":
        out = sim
    elif target == "cosine":
        out = 1.0 - sim
    else:
        out = np.sqrt(2.0 * (1.0 - sim))
    return float(out) if out.ndim == 0 else out


def build_index(vectors: np.ndarray, *, n_trees: int, seed: int, n_jobs: int = -1) -> Any:
    """Build an Annoy forest (angular metric) over ``vectors``.

    Args:
        vectors: float array of shape (n_images, dim), L2-normalised rows.
        n_trees: number of random-projection trees.
        seed: seed of the forest (results are reproducible for a given seed and data).
        n_jobs: threads used to build the trees; -1 = all cores.

    Returns:
        A built ``annoy.AnnoyIndex`` whose item ``i`` is row ``i`` of ``vectors``.
    """
    from annoy import AnnoyIndex

    n, dim = vectors.shape
    index = AnnoyIndex(dim, "angular")
    index.set_seed(seed)
    for i in range(n):
        index.add_item(i, vectors[i])
    try:
        index.build(n_trees, n_jobs=n_jobs)
    except Exception as e:  # annoy raises plain Exception / OSError
        raise DedupError(f"cannot build the Annoy index: {e}") from e
    return index


def neighbour_graph(
    embeddings: Embeddings,
    *,
    eps: float,
    k: int,
    n_trees: int,
    search_k: int = -1,
    seed: int = 42,
    progress: ProgressFn | None = None,
) -> sp.csr_matrix:
    """Sparse graph of cosine distances from each image to its ``k`` nearest neighbours within ``eps``.

    Neighbours come from an Annoy forest over ``embeddings.vectors``, queried with each image's vector and,
    when present, its mirror image's and other views' vectors; each candidate's distance is then recomputed
    exactly with :meth:`Embeddings.similarity`. Edges are made symmetric (``i~j`` when either finds the
    other).
    Distance 0 (identical images) is stored as an explicit entry, so it survives sparse storage; absent
    entries mean "not a neighbour".

    Args:
        embeddings: the images' vectors (and mirrored vectors).
        eps: cosine-distance radius, ``1 - threshold_similarity`` (compared with :data:`TOLERANCE` slack).
        k: neighbours looked up per image (excluding itself).
        n_trees: Annoy trees.
        search_k: Annoy nodes inspected per query; -1 = Annoy's default.
        seed: Annoy seed.
        progress: optional callback ``(phase, done, total)`` with phase ``"index"``.

    Returns:
        ``scipy.sparse.csr_matrix`` of shape (n_images, n_images), float64 cosine distances, no diagonal.
    """
    n = len(embeddings)
    if n < 2:
        return sp.csr_matrix((n, n), dtype=np.float64)
    rows, cols = candidate_pairs(
        embeddings, k=k, n_trees=n_trees, search_k=search_k, seed=seed, progress=progress
    )
    return _graph_from_candidates(embeddings, rows, cols, eps)


def candidate_pairs(
    embeddings: Embeddings,
    *,
    k: int,
    n_trees: int,
    search_k: int = -1,
    seed: int = 42,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's approximate ``k`` nearest neighbours from an Annoy forest, as candidate pairs.

    Each image is queried with its vector and, when present, its mirror image's vector (so a flipped copy
    is found); the image itself is left out. Distances are not computed here: callers recompute them
    exactly with :meth:`Embeddings.similarity` (:func:`neighbour_graph`, ``dedup.tune``).

    Returns:
        ``(rows, cols)``: int64 arrays of equal length; ``cols[i]`` is a candidate neighbour of ``rows[i]``.
        A pair may appear more than once (found directly and mirrored). Empty for fewer than 2 images.
    """
    n = len(embeddings)
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    index = build_index(embeddings.vectors, n_trees=n_trees, seed=seed)
    queries = [vecs for _, vecs in embeddings._others()]
    kk = min(k + 1, n)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, n)
        for i in range(start, stop):
            found = index.get_nns_by_item(i, kk, search_k)
            for vecs in queries:
                found += index.get_nns_by_vector(vecs[i], kk, search_k)
            nns = np.fromiter(found, dtype=np.int64)
            nns = nns[nns != i]
            rows.append(np.full(len(nns), i, dtype=np.int64))
            cols.append(nns)
        if progress:
            progress("index", stop, n)
    return np.concatenate(rows), np.concatenate(cols)


def graph_from_pairs(embeddings: Embeddings, rows: np.ndarray, cols: np.ndarray, eps: float) -> sp.csr_matrix:
    """The neighbour graph of :func:`neighbour_graph` built from given candidate pairs (see there).

    Lets a caller query the Annoy forest once (:func:`candidate_pairs`) and build graphs for several
    ``eps``: the result equals ``neighbour_graph(..., eps=eps)`` for the same candidates.
    """
    n = len(embeddings)
    if n < 2 or len(rows) == 0:
        return sp.csr_matrix((n, n), dtype=np.float64)
    return _graph_from_candidates(embeddings, rows, cols, eps)


def _graph_from_candidates(
    embeddings: Embeddings, rows: np.ndarray, cols: np.ndarray, eps: float
) -> sp.csr_matrix:
    """Symmetric sparse cosine-distance graph of the candidate pairs ``(rows[i], cols[i])`` within ``eps``."""
    n = len(embeddings)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    keys = np.unique(lo * n + hi)
    lo, hi = keys // n, keys % n
    sim, _ = embeddings.similarity(lo, hi)
    dist = 1.0 - sim
    dist[dist < TOLERANCE] = 0.0
    keep = dist <= eps + TOLERANCE
    lo, hi, dist = lo[keep], hi[keep], dist[keep]
    graph = sp.coo_matrix(
        (np.concatenate([dist, dist]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))), shape=(n, n)
    )
    return graph.tocsr()
