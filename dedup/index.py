"""Annoy nearest-neighbour index and the sparse neighbour graph built from it.

Distances are cosine distances (see :mod:`dedup.embeddings` for the unit conversions).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from dedup.embeddings import TOLERANCE, Embeddings, to_distance, to_similarity
from dedup.errors import DedupError

ProgressFn = Callable[[str, int, "int | None"], None]

_QUERY_CHUNK = 4096
# From this many images on, neighbour queries run in worker processes (see neighbour_graph).
PARALLEL_FROM = 50_000
# Up to this many images neighbours are found exactly, with matrix products (faster than building and
# querying a forest at these sizes, and nothing is missed); above, with Annoy (the exact cost grows as n^2).
EXACT_MAX = 20_000
# Similarity entries computed at once by the exact search (rows x images), about 64 MB of float32.
_EXACT_BLOCK = 1 << 24


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
    exact_max: int = EXACT_MAX,
) -> sp.csr_matrix:
    """Sparse graph of cosine distances from each image to its ``k`` nearest neighbours within ``eps``.

    Up to ``exact_max`` images the neighbours are exact: each image's best similarity over its views
    (itself, its mirror image, rotations) to every image comes from matrix products, and its ``k`` most
    similar within ``eps`` are kept (:func:`_exact_query`). Above, they come from an Annoy forest over
    ``embeddings.vectors``, queried with each image's vector and, when present, its mirror image's and
    other views' vectors. Either way each candidate's distance is then recomputed exactly with
    :meth:`Embeddings.similarity`, and edges are made symmetric (``i~j`` when either finds the other).
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
        exact_max: largest number of images searched exactly (0 = always Annoy).

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

    if n <= exact_max:
        rows = max(1, min(n, _EXACT_BLOCK // n))
        for start in range(0, n, rows):
            parts.append(_exact_query(embeddings, start, min(start + rows, n), kk, eps))
            if progress:
                progress("index", min(start + rows, n), n)
    elif workers > 1 and n >= processes_from:
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


def _exact_query(embeddings: Embeddings, start: int, stop: int, kk: int, eps: float) -> _Edges:
    """Edges within ``eps`` from the images ``start..stop-1`` to their ``kk - 1`` most similar images, by
    the best similarity of any of their views to the others' vectors (the exact counterpart of
    :func:`_query`)."""
    vectors = embeddings.vectors
    best = vectors[start:stop] @ vectors.T
    for _, others in embeddings.other_views():
        np.maximum(best, others[start:stop] @ vectors.T, out=best)
    rows = np.arange(stop - start)
    best[rows, rows + start] = -np.inf  # not its own neighbour
    floor = float(to_similarity(eps)) - 2 * TOLERANCE
    keep = best >= floor
    want = kk - 1
    many = np.flatnonzero(keep.sum(axis=1) > want)
    if len(many):  # rows with more candidates than k: only the k most similar
        top = (
            np.argpartition(-best[many], want - 1, axis=1)[:, :want]
            if want > 0
            else np.empty((len(many), 0), int)
        )
        keep[many] = False
        keep[many[:, None], top] = best[many[:, None], top] >= floor
    r, c = np.nonzero(keep)
    return _edges_within(embeddings, r + start, c, eps)


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
    queries = [vecs for _, vecs in embeddings.other_views()]
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
    dist = np.asarray(to_distance(sim), dtype=np.float64)
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


def nearest(
    base: Embeddings,
    queries: Embeddings,
    *,
    k: int,
    eps: float,
    forest: Any = None,
    forest_rows: int = 0,
    search_k: int = -1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query image's ``k`` nearest images of ``base`` within ``eps``: the query side of
    :func:`neighbour_graph`, for images that are not part of ``base`` (a saved index's new images).

    The first ``forest_rows`` rows of ``base`` are searched with the Annoy ``forest`` built over them
    (queried with every view of the query: itself, its mirror image, rotations), the other rows -- or all
    of them without a forest -- exactly, by the best similarity of any query view to their vectors, as
    :func:`neighbour_graph` does up to :data:`EXACT_MAX` images. Every candidate's similarity is then
    computed exactly with :meth:`Embeddings.similarity` and those within ``eps`` are kept, the ``k`` most
    similar (ties by row).

    Args:
        base: the indexed images' vectors (may be memory-mapped).
        queries: the query images' vectors, with the same views as ``base``.
        k: neighbours kept per query.
        eps: cosine-distance radius, ``1 - threshold_similarity``.
        forest: an Annoy forest over ``base.vectors[:forest_rows]``, or None.
        forest_rows: rows of ``base`` the forest holds.
        search_k: Annoy nodes inspected per query; -1 = Annoy's default.

    Returns:
        One ``(rows, distances)`` per query: int64 rows of ``base`` and float64 cosine distances, nearest
        first.
    """
    n = len(base)
    start = forest_rows if forest is not None else 0
    floor = float(to_similarity(eps)) - 2 * TOLERANCE
    out = []
    q_views = [queries.vectors] + [v for _, v in queries.other_views()]
    step = max(1, _EXACT_BLOCK // max(1, base.vectors.shape[1]))  # base rows compared at once
    for q in range(len(queries)):
        found: list[np.ndarray] = []
        if forest is not None and forest_rows > 0:
            hits: list[int] = []
            for vecs in q_views:
                hits += forest.get_nns_by_vector(vecs[q], min(k, forest_rows), search_k)
            found.append(np.fromiter(hits, dtype=np.int64))
        for lo in range(start, n, step):
            hi = min(n, lo + step)
            block = np.asarray(base.vectors[lo:hi])
            best = block @ q_views[0][q]
            for vecs in q_views[1:]:
                np.maximum(best, block @ vecs[q], out=best)
            within = np.flatnonzero(best >= floor)
            if len(within) > k:
                within = within[np.argpartition(-best[within], k - 1)[:k]]
            found.append(within + lo)
        rows = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
        if len(rows) == 0:
            out.append((rows, np.empty(0, dtype=np.float64)))
            continue
        local = base.take(rows).concat(queries.take([q]))
        sim, _ = local.similarity(np.arange(len(rows)), np.full(len(rows), len(rows)))
        dist = np.asarray(to_distance(sim), dtype=np.float64)
        dist[dist < TOLERANCE] = 0.0
        keep = np.flatnonzero(dist <= eps + TOLERANCE)
        order = keep[np.lexsort((rows[keep], dist[keep]))][:k]
        out.append((rows[order], dist[order]))
    return out


def load_index(path: Path, dim: int) -> Any:
    """An Annoy forest saved with ``save`` (angular metric, ``dim`` dimensions), memory-mapped.

    Raises:
        DedupError: the file cannot be loaded as such a forest.
    """
    from annoy import AnnoyIndex

    index = AnnoyIndex(dim, "angular")
    try:
        index.load(str(path))
    except Exception as e:  # annoy raises plain Exception / OSError
        raise DedupError(f"cannot load the Annoy index {path}: {e}") from e
    return index
