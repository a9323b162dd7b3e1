"""Orchestration only: paths -> images -> features -> neighbour graph -> groups -> :class:`ScanResult`.

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dedup.cluster import Clustering, Group, cluster_embeddings, dbscan_labels, form_groups
from dedup.config import AUTO, Config
from dedup.errors import ConfigError, ImageError
from dedup.features import Extractor, make_extractor
from dedup.images import ImageFile, ImageRecord, Skipped, discover, open_image, stat_root
from dedup.index import Embeddings, convert, neighbour_graph

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]


@dataclass
class ScanResult:
    """Everything a scan found; the input of reports and actions.

    Attributes:
        paths: absolute roots that were scanned.
        images: every image that decoded, aligned with the rows of ``embeddings``.
        embeddings: their feature vectors (and mirror-image vectors when ``features.mirror`` is on).
        skipped: files that could not be used, with reasons.
        groups: duplicate groups (indices into ``images``), largest first.
        extractor: ``info()`` of the extractor that really ran (after any offline fallback).
        config: the configuration used.
        threshold: effective cosine-similarity threshold.
        chain_splits: images moved out of a DBSCAN cluster by the chaining guard.
        seconds: wall time per phase: ``discover``, ``decode_extract``, ``index``, ``cluster`` (and
            ``grouping`` after :func:`cluster_collection`).
        clustering: every image's cluster, after :func:`cluster_collection` (``group.method`` agglomerative
            or kmeans); None otherwise.
    """

    paths: list[str]
    images: list[ImageRecord]
    embeddings: Embeddings
    skipped: list[Skipped]
    groups: list[Group]
    extractor: dict[str, Any]
    config: Config
    threshold: float
    chain_splits: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    clustering: Clustering | None = None

    @property
    def duplicates(self) -> int:
        """Images that could go: every group member except the kept one."""
        return sum(len(g.members) - 1 for g in self.groups)

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by removing every non-kept member."""
        return sum(self.images[m].size for g in self.groups for m in g.members if m != g.keep)


def effective_threshold(config: Config, extractor: Extractor) -> float:
    """The cosine-similarity threshold: the configured one, or the extractor's default for ``auto``."""
    threshold = config.cluster.threshold
    return extractor.default_threshold if threshold == AUTO else float(threshold)


def find_duplicates(
    paths: Sequence[str | Path],
    config: Config | None = None,
    *,
    exclude: Sequence[Path] = (),
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> ScanResult:
    """Find groups of near-duplicate images under ``paths``. Reads files, never modifies anything.

    Args:
        paths: folders and/or image files to scan.
        config: configuration (``load_config()`` defaults when omitted).
        exclude: folders whose contents are not scanned (e.g. a quarantine folder inside a root).
        progress: optional callback ``(phase, done, total)``; phases ``discover``, ``extract``, ``index``,
            ``cluster``.
        warn: optional callback for one-line warnings (e.g. the offline fallback).

    Returns:
        A :class:`ScanResult`.

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    seconds: dict[str, float] = {}
    for path in paths:  # cheap checks first: a typo in a path must not wait for TensorFlow
        stat_root(path)
    # Weights before the walk: a missing weights file should fail before a long walk over the folders.
    extractor = make_extractor(config.features, warn=warn)
    threshold = effective_threshold(config, extractor)
    eps = float(convert(threshold, "similarity", "cosine"))

    t0 = time.perf_counter()
    if progress:
        progress("discover", 0, None)
    files, skipped = discover(paths, config.discover, exclude=exclude, progress=progress)
    seconds["discover"] = time.perf_counter() - t0
    if progress:
        progress("discover", len(files), len(files))

    t0 = time.perf_counter()
    images, embeddings, failed = extract_features(files, extractor, config, progress=progress)
    seconds["decode_extract"] = time.perf_counter() - t0
    skipped = sorted(skipped + failed, key=lambda s: s.path)

    t0 = time.perf_counter()
    if progress:
        progress("index", 0, len(images))
    graph = neighbour_graph(
        embeddings,
        eps=eps,
        k=config.index.neighbours,
        n_trees=config.index.n_trees,
        search_k=config.index.search_k,
        seed=config.index.seed,
        progress=progress,
    )
    seconds["index"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    labels = dbscan_labels(graph, eps=eps, min_samples=config.cluster.min_samples)
    groups, splits = form_groups(
        labels, embeddings, graph, images, threshold=threshold, policy=config.keep.policy
    )
    if progress:
        progress("cluster", len(images), len(images))
    seconds["cluster"] = time.perf_counter() - t0

    return ScanResult(
        paths=[os.path.abspath(p) for p in paths],
        images=images,
        embeddings=embeddings,
        skipped=skipped,
        groups=groups,
        extractor=extractor.info(),
        config=config,
        threshold=threshold,
        chain_splits=splits,
        seconds=seconds,
    )


def cluster_collection(
    result: ScanResult, config: Config | None = None, *, progress: ProgressFn | None = None
) -> ScanResult:
    """Put every scanned image into a cluster with ``config.group`` (agglomerative or kmeans).

    Args:
        result: a scan (its embeddings are clustered; mirror-image vectors are not used).
        config: the configuration (``result.config`` when omitted); ``group`` and ``index`` sections.
        progress: optional callback; phase ``grouping``.

    Returns:
        A copy of ``result`` with ``clustering`` set and ``seconds["grouping"]``.

    Raises:
        ConfigError: ``group.method`` is dbscan, or both ``group.clusters`` and
            ``group.distance_threshold`` are given, or a distance threshold with kmeans.
    """
    config = config or result.config
    g = config.group
    if g.method == "dbscan":
        raise ConfigError(
            "group.method: dbscan forms duplicate groups (find_duplicates); allowed here: "
            "agglomerative, kmeans"
        )
    if g.distance_threshold > 0 and g.clusters != AUTO:
        raise ConfigError(
            "group.clusters and group.distance_threshold: give one of them (--clusters N or "
            "--distance-threshold D), not both"
        )
    if g.distance_threshold > 0 and g.method != "agglomerative":
        raise ConfigError("group.distance_threshold: applies to --method agglomerative only")
    if g.auto_min > g.auto_max:
        raise ConfigError(f"group.auto_min ({g.auto_min}) is larger than group.auto_max ({g.auto_max})")
    t0 = time.perf_counter()
    if progress:
        progress("grouping", 0, len(result.images))
    clustering = cluster_embeddings(
        result.embeddings,
        method=g.method,
        clusters=g.clusters,
        distance_threshold=g.distance_threshold,
        linkage=g.linkage,
        exact_max=g.exact_max,
        minibatch_above=g.minibatch_above,
        auto_range=(g.auto_min, g.auto_max),
        silhouette_sample=g.silhouette_sample,
        seed=g.seed,
        neighbours=config.index.neighbours,
        n_trees=config.index.n_trees,
        search_k=config.index.search_k,
        index_seed=config.index.seed,
    )
    if progress:
        progress("grouping", len(result.images), len(result.images))
    seconds = {**result.seconds, "grouping": time.perf_counter() - t0}
    return replace(result, clustering=clustering, seconds=seconds)


_Loaded = tuple[ImageRecord, np.ndarray] | Skipped


def extract_features(
    files: Sequence[ImageFile],
    extractor: Extractor,
    config: Config,
    *,
    progress: ProgressFn | None = None,
) -> tuple[list[ImageRecord], Embeddings, list[Skipped]]:
    """Decode ``files`` in worker threads and embed them in batches.

    Decoding of the next batch overlaps with the model running on the current one; at most two batches
    are in memory at a time. With ``features.mirror`` each batch is embedded a second time mirrored
    (prepared arrays are (height, width[, channels]), so the mirror image is a flip of axis 2 of the batch).

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded, their vectors (float32, shape
        (len(images), extractor.dim)), and the files that could not be decoded.
    """
    images: list[ImageRecord] = []
    chunks: list[np.ndarray] = []
    mirror_chunks: list[np.ndarray] = []
    skipped: list[Skipped] = []
    done = 0
    if progress:
        progress("extract", 0, len(files))
    for batch in _decoded_batches(files, extractor, config):
        ok = [item for item in batch if not isinstance(item, Skipped)]
        skipped.extend(item for item in batch if isinstance(item, Skipped))
        if ok:
            stacked = np.stack([arr for _, arr in ok])
            chunks.append(extractor.embed(stacked))
            if config.features.mirror:
                mirror_chunks.append(extractor.embed(np.ascontiguousarray(np.flip(stacked, axis=2))))
            images.extend(rec for rec, _ in ok)
        done += len(batch)
        if progress:
            progress("extract", done, len(files))

    def stack(parts: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(parts) if parts else np.empty((0, extractor.dim), dtype=np.float32)
        return out.astype(np.float32, copy=False)

    mirrored = stack(mirror_chunks) if config.features.mirror else None
    return images, Embeddings(stack(chunks), mirrored), skipped


def _decoded_batches(
    files: Sequence[ImageFile], extractor: Extractor, config: Config
) -> Iterator[list[_Loaded]]:
    """Yield batches of decoded+prepared images, decoding the following batch in the background."""
    size = config.features.batch_size
    draft = extractor.decode_size if config.decode.draft else None

    def load(f: ImageFile) -> _Loaded:
        try:
            image, width, height = open_image(f.path, max_pixels=config.decode.max_pixels, draft_size=draft)
        except ImageError as e:
            return Skipped(f.path, str(e))
        record = ImageRecord(path=f.path, size=f.size, mtime=f.mtime, width=width, height=height)
        return record, extractor.prepare(image)

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dedup-decode") as pool:
        pending: list[list[Future[_Loaded]]] = []
        for start in range(0, len(files), size):
            pending.append([pool.submit(load, f) for f in files[start : start + size]])
            if len(pending) == 2:
                yield [fut.result() for fut in pending.pop(0)]
        for futures in pending:
            yield [fut.result() for fut in futures]
