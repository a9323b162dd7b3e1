"""Partitioned duplicate search (SemDeDup-style): k-means partitions searched and verified one at a time.

One Annoy index and its neighbour graph over every image must fit one process's memory. With
``scale.partitions`` = N > 1 the images are split instead:

1. **k-means on a sample** (``scale.sample`` images, ``scale.seed``) of the first extractor's vectors gives
   N centroids (L2-normalised: the partitions are cones of directions).
2. **Assignment**: every image goes to the partition of its nearest centroid, and so does each of its other
   views (mirror image, rotations), so a flipped copy lands beside its original. An image whose second-
   nearest centroid is within ``scale.border`` (cosine similarity) of its nearest is a *border image* and
   goes to both: a pair that straddles a boundary is still found in one of them.
3. **Per partition** (:func:`search_partition`, a plain function of plain values: run in this process one
   partition after the other, or as Ray tasks by :mod:`dedup.distributed`): every extractor's neighbour
   graph over the partition's images, and its candidate pairs decided by a :class:`~dedup.verify.Verifier`
   (keypoints when verification is on). Only the decisions come back, in global image indices.
4. **Merge** (the caller, :func:`dedup.pipeline.find_duplicates`): the decisions of every partition become
   the run's verifier's, then DBSCAN and the chaining guard run once over the whole duplicate graph, as on
   the single-index path.

What can be lost: a pair whose images fall in different partitions without either being a border image,
and a pair that only a later extractor proposes when the first extractor puts its images far apart
(partitions follow the first extractor). ``bench/run_bench.py partitions`` measures the recall of planted
pairs against the single index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dedup.config import Config
from dedup.embeddings import Embeddings, to_distance
from dedup.images import ImageRecord
from dedup.index import neighbour_graph
from dedup.verify import KeypointStore, PairEvidence, Thresholds, Verifier

# Images whose similarities to every centroid are computed at once (rows x N float32).
_ASSIGN_CHUNK = 65_536


@dataclass(frozen=True)
class Partitions:
    """Which images each partition holds.

    Attributes:
        members: per partition (centroid), the sorted global indices of its images (int64 arrays; empty
            when no image is nearest to that centroid).
        centroids: float32 of shape (N, dim), L2-normalised.
        border: images put in a second partition because they lie near a boundary.
    """

    members: list[np.ndarray]
    centroids: np.ndarray
    border: int

    @property
    def count(self) -> int:
        """Partitions that hold images."""
        return sum(1 for m in self.members if len(m))

    @property
    def largest(self) -> int:
        """Images in the largest partition."""
        return max((len(m) for m in self.members), default=0)


def partition_images(
    embeddings: Embeddings, n_partitions: int, *, sample: int, border: float, seed: int
) -> Partitions:
    """Split the images of ``embeddings`` into ``n_partitions`` by k-means on a sample (see the module).

    Args:
        embeddings: the first extractor's vectors, shape (n_images, dim), L2-normalised, with their views.
        n_partitions: wanted number of partitions (at most the number of images).
        sample: images k-means is fitted on (a random sample when there are more).
        border: cosine-similarity margin to the second-nearest centroid below which an image is in both.
        seed: seed of the sample and of k-means.

    Returns:
        The :class:`Partitions`; every image is in at least one.
    """
    from sklearn.cluster import MiniBatchKMeans

    vectors = embeddings.vectors
    n = len(vectors)
    k = max(1, min(n_partitions, n))
    rng = np.random.default_rng(seed)
    fit_on = vectors if n <= sample else vectors[np.sort(rng.choice(n, sample, replace=False))]
    if k == 1:
        centroids = fit_on.mean(axis=0, keepdims=True)
    else:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        centroids = km.fit(fit_on).cluster_centers_
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = (centroids / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    owners: list[np.ndarray] = []  # (image, partition) rows
    border_images = 0
    for start in range(0, n, _ASSIGN_CHUNK):
        stop = min(start + _ASSIGN_CHUNK, n)
        rows = np.arange(start, stop)
        sims = vectors[start:stop] @ centroids.T
        order = np.argsort(-sims, axis=1)[:, :2]
        owners.append(np.stack([rows, order[:, 0]], axis=1))
        if k > 1:
            top = sims[np.arange(len(rows)), order[:, 0]]
            second = sims[np.arange(len(rows)), order[:, 1]]
            near = top - second <= border
            border_images += int(near.sum())
            owners.append(np.stack([rows[near], order[near, 1]], axis=1))
        for _, views in embeddings.other_views():
            nearest = np.argmax(np.asarray(views[start:stop]) @ centroids.T, axis=1)
            owners.append(np.stack([rows, nearest], axis=1))
    pairs = np.unique(np.concatenate(owners).astype(np.int64), axis=0)  # sorted by partition, then image
    members = [pairs[pairs[:, 1] == p, 0] for p in range(k)]
    return Partitions(members=members, centroids=centroids, border=border_images)


@dataclass
class PartitionWork:
    """Everything one partition's search needs, as plain values (sent to a Ray task as they are).

    Attributes:
        indices: sorted global indices of the partition's images.
        images: their records (paths for keypoints), aligned with ``indices``.
        embeddings: per extractor, the partition's rows of its embeddings (all views).
        names: extractor names, in order.
        thresholds: per extractor, its thresholds.
        config: the run's configuration (``index``, ``verify``).
        verify: whether candidate pairs are checked with keypoints.
        n_jobs: Annoy build threads and query processes (-1 = every core of the machine it runs on).
    """

    indices: np.ndarray
    images: list[ImageRecord]
    embeddings: list[Embeddings]
    names: list[str]
    thresholds: list[Thresholds]
    config: Config
    verify: bool
    n_jobs: int = -1


@dataclass
class PartitionResult:
    """What one partition's search decided, in global image indices.

    Attributes:
        size: images in the partition.
        candidates: candidate pairs its neighbour graphs proposed.
        evidence: every decided pair ``(i, j)`` (i < j) and its decision.
        stats: the verifier's work counts (``sure``, ``matched``, ...).
    """

    size: int
    candidates: int
    evidence: dict[tuple[int, int], PairEvidence] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


def search_partition(work: PartitionWork) -> PartitionResult:
    """One partition: every extractor's neighbour graph over its images, candidates decided by a
    :class:`Verifier` within ``verify.budget``; the same steps as the single-index path of
    :func:`dedup.pipeline.find_duplicates`, without the ignore list (applied when merging) and without the
    persistent verify cache (its one writer is the driver)."""
    config = work.config
    n = len(work.indices)
    pairs = []
    for emb, th in zip(work.embeddings, work.thresholds, strict=True):
        eps = float(to_distance(th.candidate if work.verify else th.plain))
        graph = neighbour_graph(
            emb,
            eps=eps,
            k=config.index.neighbours,
            n_trees=config.index.n_trees,
            search_k=config.index.search_k,
            seed=config.index.seed,
            n_jobs=work.n_jobs,
        )
        upper = sp.triu(graph, k=1).tocoo()
        pairs.append(np.stack([upper.row, upper.col], axis=1).astype(np.int64))
    candidates = np.unique(np.concatenate(pairs), axis=0) if pairs else np.empty((0, 2), dtype=np.int64)
    workers = 1 if work.n_jobs == 1 else max(1, min(4, _cores()))
    store = KeypointStore(work.images, config, workers=workers) if work.verify else None
    verifier = Verifier(
        names=work.names,
        embeddings=work.embeddings,
        thresholds=work.thresholds,
        verify=work.verify,
        store=store,
        config=config.verify,
        workers=workers,
    )
    verifier.decide_candidates(candidates, budget=config.verify.budget)
    g = work.indices
    evidence = {(int(g[i]), int(g[j])): ev for (i, j), ev in verifier.evidence.items()}
    return PartitionResult(size=n, candidates=len(candidates), evidence=evidence, stats=dict(verifier.stats))


def works(
    partitions: Partitions,
    images: Sequence[ImageRecord],
    all_embeddings: Sequence[Embeddings],
    names: list[str],
    thresholds: list[Thresholds],
    config: Config,
    verify: bool,
    *,
    n_jobs: int = -1,
) -> Iterable[PartitionWork]:
    """The :class:`PartitionWork` of every partition, made one at a time (each holds copies of its rows)."""
    for members in partitions.members:
        if not len(members):
            continue
        yield PartitionWork(
            indices=members,
            images=[images[i] for i in members.tolist()],
            embeddings=[emb.take(members) for emb in all_embeddings],
            names=names,
            thresholds=thresholds,
            config=config,
            verify=verify,
            n_jobs=n_jobs,
        )


def merge(results: Iterable[PartitionResult], verifier: Verifier, progress: ProgressFn | None = None) -> int:
    """Give ``verifier`` the decisions of every partition (a pair decided in two partitions is an edge
    when either found it one) and add up their work counts; returns the candidate pairs proposed."""
    proposed = 0
    for done, result in enumerate(results, start=1):
        proposed += result.candidates
        for key, ev in result.evidence.items():
            known = verifier.evidence.get(key)
            if known is None or (ev.edge and not known.edge):
                verifier.evidence[key] = ev
        for name, count in result.stats.items():
            verifier.stats[name] = verifier.stats.get(name, 0) + count
        if progress:
            progress("verify", done, None)
    return proposed


ProgressFn = Callable[[str, int, "int | None"], None]


def _cores() -> int:
    import os

    return os.cpu_count() or 1
