"""Annoy nearest-neighbour index and the sparse neighbour graph built from it.

Users think in cosine similarity; Annoy's angular metric returns ``sqrt(2 * (1 - cos))``; DBSCAN wants a
distance. :func:`convert` is the one place that converts between these units.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from dedup.errors import DedupError

Unit = Literal["similarity", "cosine", "angular"]
ProgressFn = Callable[[str, int, "int | None"], None]

_QUERY_CHUNK = 4096
# From this many images on, neighbour queries run in worker processes (see neighbour_graph).
PARALLEL_FROM = 50_000

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


def build_index(
    vectors: np.ndarray, *, n_trees: int, seed: int, n_jobs: int = -1, on_disk: Path | None = None
) -> Any:
    """Build an Annoy forest (angular metric) over ``vectors``.

    Args:
        vectors: float array of shape (n_images, dim), L2-normalised rows.
        n_trees: number of random-projection trees.
        seed: seed of the forest (results are reproducible for a given seed and data).
        n_jobs: threads used to build the trees; -1 = all cores.
        on_disk: build straight into this file (memory-mapped; other processes can ``load`` it).

    Returns:
        A built ``annoy.AnnoyIndex`` whose item ``i`` is row ``i`` of ``vectors``.
    """
    from annoy import AnnoyIndex

    n, dim = vectors.shape
    index = AnnoyIndex(dim, "angular")
    index.set_seed(seed)
    try:
        if on_disk is not None:
            index.on_disk_build(str(on_disk))
        for i in range(n):
            index.add_item(i, vectors[i])
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
    chunk: int = _QUERY_CHUNK,
    n_jobs: int = -1,
    processes_from: int = PARALLEL_FROM,
) -> sp.csr_matrix:
    """Sparse graph of cosine distances from each image to its ``k`` nearest neighbours within ``eps``.

    Neighbours come from an Annoy forest over ``embeddings.vectors``, queried with each image's vector and,
    when present, its mirror image's and other views' vectors; each candidate's distance is then recomputed
    exactly with :meth:`Embeddings.similarity`. Edges are made symmetric (``i~j`` when either finds the
    other).
    Distance 0 (identical images) is stored as an explicit entry, so it survives sparse storage; absent
    entries mean "not a neighbour".

    Queries run in chunks of ``chunk`` images; each chunk keeps only its candidates within ``eps``, so
    memory grows with the number of edges, not with ``n * k``. From ``processes_from`` images on, chunks
    are queried by ``n_jobs`` worker processes (Annoy holds the GIL while it searches, so threads would not
    help) sharing a memory-mapped copy of the forest. The result does not depend on ``chunk``, ``n_jobs``
    or ``processes_from``.

    Args:
        embeddings: the images' vectors (and mirrored vectors).
        eps: cosine-distance radius, ``1 - threshold_similarity`` (compared with :data:`TOLERANCE` slack).
        k: neighbours looked up per image (excluding itself).
        n_trees: Annoy trees.
        search_k: Annoy nodes inspected per query; -1 = Annoy's default.
        seed: Annoy seed.
        progress: optional callback ``(phase, done, total)`` with phase ``"index"``.
        chunk: images queried per task.
        n_jobs: Annoy build threads and query processes; -1 = all cores.
        processes_from: smallest number of images queried by worker processes (starting them costs ~1 s).

    Returns:
        ``scipy.sparse.csr_matrix`` of shape (n_images, n_images), float64 cosine distances, no diagonal.
    """
    n = len(embeddings)
    if n < 2:
        return sp.csr_matrix((n, n), dtype=np.float64)
    kk = min(k + 1, n)
    workers = max(1, (os.cpu_count() or 1) if n_jobs < 0 else n_jobs)
    starts = list(range(0, n, chunk))
    parts: list[_Edges] = []

    def done(part: _Edges) -> None:
        parts.append(part)
        if progress:
            progress("index", min(len(parts) * chunk, n), n)

    if workers > 1 and n >= processes_from:
        # Annoy holds the GIL while it searches, so parallel queries need processes: the forest is built
        # into a memory-mapped file that every worker loads (shared page cache, not copies).
        with tempfile.TemporaryDirectory(prefix="dedup-annoy-") as tmp:
            folder = Path(tmp)
            index = build_index(
                embeddings.vectors, n_trees=n_trees, seed=seed, n_jobs=n_jobs, on_disk=folder / _INDEX_FILE
            )
            index.unload()
            np.save(folder / "vectors.npy", embeddings.vectors)
            if embeddings.mirrored is not None:
                np.save(folder / "mirrored.npy", embeddings.mirrored)
            for v, (_, vecs) in enumerate(embeddings.views):
                np.save(folder / f"view{v}.npy", vecs)
            view_names = [name for name, _ in embeddings.views]
            dim = embeddings.vectors.shape[1]
            context = multiprocessing.get_context("spawn")  # never fork a process that may run TensorFlow
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                pending: deque[Future[_Edges]] = deque()
                for start in starts:  # at most 2 chunks per worker in flight: results stay small
                    stop = min(start + chunk, n)
                    args = (str(folder), dim, view_names, start, stop, kk, search_k, eps)
                    pending.append(pool.submit(_query_file, *args))
                    if len(pending) >= 2 * workers:
                        done(pending.popleft().result())
                while pending:
                    done(pending.popleft().result())
    else:
        index = build_index(embeddings.vectors, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
        for start in starts:
            done(_query(index, embeddings, start, min(start + chunk, n), kk, search_k, eps))
    lo = np.concatenate([p[0] for p in parts])
    hi = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    keys, first = np.unique(lo * n + hi, return_index=True)
    lo, hi, dist = keys // n, keys % n, dist[first]
    return _symmetric(lo, hi, dist, n)


_Edges = tuple[np.ndarray, np.ndarray, np.ndarray]
_INDEX_FILE = "index.ann"
_WORKER_STATE: dict[str, tuple[Any, Embeddings]] = {}


def _query(
    index: Any, embeddings: Embeddings, start: int, stop: int, kk: int, search_k: int, eps: float
) -> _Edges:
    """Edges within ``eps`` from the images ``start..stop-1`` to their ``kk`` Annoy neighbours (and those
    of their mirror images and other views)."""
    rows, cols = _neighbours(index, embeddings, start, stop, kk, search_k)
    return _edges_within(embeddings, rows, cols, eps)


def _neighbours(
    index: Any, embeddings: Embeddings, start: int, stop: int, kk: int, search_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(rows, cols)`` of the images ``start..stop-1``: their ``kk`` Annoy neighbours,
    found with their own vectors and every other view's (the image itself left out)."""
    queries = [vecs for _, vecs in embeddings._others()]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for i in range(start, stop):
        found = index.get_nns_by_item(i, kk, search_k)
        for vecs in queries:
            found += index.get_nns_by_vector(vecs[i], kk, search_k)
        nns = np.fromiter(found, dtype=np.int64)
        nns = nns[nns != i]
        rows.append(np.full(len(nns), i, dtype=np.int64))
        cols.append(nns)
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _query_file(
    folder: str, dim: int, view_names: list[str], start: int, stop: int, kk: int, search_k: int, eps: float
) -> _Edges:
    """:func:`_query` in a worker process, on the index and vectors saved in ``folder`` (loaded once)."""
    from annoy import AnnoyIndex

    state = _WORKER_STATE.get(folder)
    if state is None:
        index = AnnoyIndex(dim, "angular")
        index.load(str(Path(folder) / _INDEX_FILE))
        vectors = np.load(Path(folder) / "vectors.npy", mmap_mode="r")
        mirrored_path = Path(folder) / "mirrored.npy"
        mirrored = np.load(mirrored_path, mmap_mode="r") if mirrored_path.exists() else None
        views = tuple(
            (name, np.load(Path(folder) / f"view{v}.npy", mmap_mode="r")) for v, name in enumerate(view_names)
        )
        _WORKER_STATE.clear()
        state = _WORKER_STATE[folder] = (index, Embeddings(vectors, mirrored, views))
    return _query(state[0], state[1], start, stop, kk, search_k, eps)


def _edges_within(
    embeddings: Embeddings, rows: np.ndarray, cols: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct candidate pairs ``(rows[i], cols[i])`` within ``eps`` as ``(lo, hi, cosine distance)``."""
    n = len(embeddings)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    keys = np.unique(lo * n + hi)
    lo, hi = keys // n, keys % n
    sim, _ = embeddings.similarity(lo, hi)
    dist = 1.0 - sim
    dist[dist < TOLERANCE] = 0.0
    keep = dist <= eps + TOLERANCE
    return lo[keep], hi[keep], dist[keep]


def _symmetric(lo: np.ndarray, hi: np.ndarray, dist: np.ndarray, n: int) -> sp.csr_matrix:
    graph = sp.coo_matrix(
        (np.concatenate([dist, dist]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))), shape=(n, n)
    )
    return graph.tocsr()


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

    Each image is queried with its vector and every other view's (mirror image, rotations), so a flipped
    copy is found; the image itself is left out. Distances are not computed here: callers recompute them
    exactly with :meth:`Embeddings.similarity` (``dedup.tune``).

    Returns:
        ``(rows, cols)``: int64 arrays of equal length; ``cols[i]`` is a candidate neighbour of ``rows[i]``.
        A pair may appear more than once (found directly and mirrored). Empty for fewer than 2 images.
    """
    n = len(embeddings)
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    index = build_index(embeddings.vectors, n_trees=n_trees, seed=seed)
    kk = min(k + 1, n)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, n)
        r, c = _neighbours(index, embeddings, start, stop, kk, search_k)
        rows.append(r)
        cols.append(c)
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
    return _symmetric(*_edges_within(embeddings, rows, cols, eps), n)
