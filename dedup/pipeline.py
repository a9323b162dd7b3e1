"""Orchestration only: paths -> images -> features -> neighbour graph -> groups -> :class:`ScanResult`.

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedup.cache import Entry, FeatureCache, Row, content_digest
from dedup.cache import opened as opened_cache
from dedup.cluster import Group, dbscan_labels, form_groups
from dedup.config import AUTO, Config
from dedup.errors import ImageError
from dedup.features import Extractor, ensure_loaded, make_extractor, uses_mirror
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
        seconds: wall time per phase: ``discover``, ``decode_extract``, ``index``, ``cluster``.
        sources: where the vectors came from (feature cache, identical files, extraction).
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
    sources: ExtractStats | None = None

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
    feats = collect_features(paths, config, exclude=exclude, progress=progress, warn=warn)
    extractor, images, embeddings = feats.extractor, feats.images, feats.embeddings
    seconds = dict(feats.seconds)
    threshold = effective_threshold(config, extractor)
    eps = float(convert(threshold, "similarity", "cosine"))

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
        paths=feats.paths,
        images=images,
        embeddings=embeddings,
        skipped=feats.skipped,
        groups=groups,
        extractor=extractor.info(),
        config=config,
        threshold=threshold,
        chain_splits=splits,
        seconds=seconds,
        sources=feats.stats,
    )


_Loaded = tuple[ImageRecord, np.ndarray] | Skipped

# Batches decoded ahead of the model: enough to hide decoding behind a model call, few enough that memory
# stays flat (each VGG16 batch of 32 images is about 19 MB of float32).
PREFETCH_BATCHES = 2


@dataclass
class ExtractStats:
    """Where the vectors of a scan came from (each decoded image counts once).

    Attributes:
        cached: found in the feature cache by path, size and modification time.
        reused: found in the cache by content (a moved, renamed or copied file).
        identical: byte-identical to another file of this scan; that file's vectors were copied.
        extracted: decoded and run through the extractor.
    """

    cached: int = 0
    reused: int = 0
    identical: int = 0
    extracted: int = 0


@dataclass
class FeatureSet:
    """The features of every image under some paths (what :func:`collect_features` returns).

    Attributes:
        paths: absolute roots that were scanned.
        images: every image that decoded, aligned with the rows of ``embeddings``.
        embeddings: their vectors (and mirror-image vectors when mirroring is on).
        skipped: files that could not be used, with reasons, sorted by path.
        extractor: the extractor that really ran (after any offline fallback); its model may be unloaded
            when every vector came from the cache.
        stats: where the vectors came from.
        seconds: wall time of ``discover`` and ``decode_extract``.
    """

    paths: list[str]
    images: list[ImageRecord]
    embeddings: Embeddings
    skipped: list[Skipped]
    extractor: Extractor
    stats: ExtractStats
    seconds: dict[str, float]


def collect_features(
    paths: Sequence[str | Path],
    config: Config | None = None,
    *,
    exclude: Sequence[Path] = (),
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> FeatureSet:
    """Discover the images under ``paths`` and get their features, through the feature cache.

    This is the first half of :func:`find_duplicates`, for every command that needs features (scan,
    similar, tune, ...). Unchanged files are read from the cache (``cache.enabled``, ``cache.dir``) without
    being decoded; when every file is cached the model is never loaded (TensorFlow is not imported).

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    seconds: dict[str, float] = {}
    for path in paths:  # cheap checks first: a typo in a path must not wait for TensorFlow
        stat_root(path)
    # Weights before the walk: a missing weights file should fail before a long walk over the folders.
    extractor = make_extractor(config.features, warn=warn, lazy=True)

    t0 = time.perf_counter()
    if progress:
        progress("discover", 0, None)
    files, skipped = discover(paths, config.discover, exclude=exclude, progress=progress)
    seconds["discover"] = time.perf_counter() - t0
    if progress:
        progress("discover", len(files), len(files))

    t0 = time.perf_counter()
    stats = ExtractStats()
    with opened_cache(config.cache, extractor.info(), extractor.dim, warn) as cache:
        images, embeddings, failed = extract_features(
            files, extractor, config, progress=progress, cache=cache, stats=stats
        )
    seconds["decode_extract"] = time.perf_counter() - t0
    return FeatureSet(
        paths=[os.path.abspath(p) for p in paths],
        images=images,
        embeddings=embeddings,
        skipped=sorted(skipped + failed, key=lambda s: s.path),
        extractor=extractor,
        stats=stats,
        seconds=seconds,
    )


def extract_features(
    files: Sequence[ImageFile],
    extractor: Extractor,
    config: Config,
    *,
    progress: ProgressFn | None = None,
    cache: FeatureCache | None = None,
    stats: ExtractStats | None = None,
) -> tuple[list[ImageRecord], Embeddings, list[Skipped]]:
    """Vectors of ``files``: from ``cache`` when it has them, else decoded in threads and embedded in batches.

    1. Files whose path, size and modification time match a cache row take its vectors and size (no decode).
    2. Exact-duplicate pre-pass: files sharing their size with another file of the scan (every remaining
       file when a cache is used, so that moved files can be found by content) get a blake2b digest of
       their bytes. Byte-identical files are embedded once and the others take copies of the vectors (so
       they group with similarity 1.0); a file whose bytes the cache knows under another path reuses them.
    3. The rest are decoded in worker threads while the model runs, at most :data:`PREFETCH_BATCHES`
       batches ahead (memory stays flat), and embedded in batches of ``features.batch_size``; with
       mirroring (:func:`~dedup.features.uses_mirror`) each batch is embedded a second time mirrored
       (prepared arrays are (height, width[, channels]), so the mirror image is a flip of axis 2).
       New vectors are written to ``cache`` batch by batch.

    Args:
        files: images to embed (as returned by :func:`~dedup.images.discover`).
        extractor: the extractor (a lazily made one is loaded here, only if something must be extracted).
        config: configuration (``features``, ``decode``).
        progress: optional ``(phase, done, total)`` callback, phase ``"extract"``.
        cache: an open :class:`~dedup.cache.FeatureCache` for this extractor, or None.
        stats: filled with the counts of where vectors came from, if given.

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded (in the order of ``files``), their vectors
        (float32, shape (len(images), extractor.dim), plus mirrored vectors when mirroring), and the files
        that could not be decoded.
    """
    stats = stats if stats is not None else ExtractStats()
    n = len(files)
    dim = extractor.dim
    mirror = uses_mirror(config.features, extractor)
    vectors = np.zeros((n, dim), dtype=np.float32)
    mirrored = np.zeros((n, dim), dtype=np.float32) if mirror else None
    shapes: dict[int, tuple[int, int]] = {}  # index -> (width, height) of the images that decoded
    reasons: dict[int, str] = {}  # index -> skip reason
    digests: dict[int, str] = {}
    done = 0
    if progress:
        progress("extract", 0, n)

    def take(i: int, entry: Entry) -> None:
        vectors[i] = entry.vector
        if mirrored is not None and entry.mirrored is not None:
            mirrored[i] = entry.mirrored
        shapes[i] = (entry.width, entry.height)

    def row(i: int) -> Row:
        f = files[i]
        width, height = shapes[i]
        m = None if mirrored is None else mirrored[i]
        return Row(f.path, f.size, _mtime_ns(f), digests.get(i), width, height, vectors[i], m)

    # 1. the cache, by path + size + mtime
    todo = list(range(n))
    if cache is not None:
        hits = cache.lookup([(f.path, f.size, _mtime_ns(f)) for f in files], mirror=mirror)
        for i, entry in hits.items():
            take(i, entry)
        stats.cached = len(hits)
        done = len(hits)
        todo = [i for i in todo if i not in hits]
        if progress and done:
            progress("extract", done, n)

    # 2. exact duplicates (size first, then content digest), and the cache by content
    sizes = Counter(f.size for f in files)
    need = todo if cache is not None else [i for i in todo if sizes[files[i].size] > 1]
    digests = _digests([files[i].path for i in need], need)
    first: dict[tuple[int, str], int] = {}
    copies: dict[int, int] = {}  # index -> index of the byte-identical file whose vectors it takes
    reused: list[int] = []
    representatives: list[int] = []
    for i in todo:
        digest = digests.get(i)
        if digest is not None:
            key = (files[i].size, digest)
            if key in first:
                copies[i] = first[key]
                continue
            first[key] = i
            known = cache.by_content(files[i].size, digest, mirror=mirror) if cache is not None else None
            if known is not None:
                take(i, known)
                reused.append(i)
                continue
        representatives.append(i)
    stats.reused = len(reused)
    done += len(reused)

    # 3. decode + embed what is left
    if representatives:
        ensure_loaded(extractor)
    position = 0
    for batch in _decoded_batches([files[i] for i in representatives], extractor, config):
        indices = representatives[position : position + len(batch)]
        position += len(batch)
        ok = [(i, item) for i, item in zip(indices, batch, strict=True) if not isinstance(item, Skipped)]
        for i, item in zip(indices, batch, strict=True):
            if isinstance(item, Skipped):
                reasons[i] = item.reason
        if ok:
            rows = [i for i, _ in ok]
            stacked = np.stack([arr for _, (_, arr) in ok])
            vectors[rows] = extractor.embed(stacked)
            if mirrored is not None:
                mirrored[rows] = extractor.embed(np.ascontiguousarray(np.flip(stacked, axis=2)))
            for i, (record, _) in ok:
                shapes[i] = (record.width, record.height)
            if cache is not None:
                cache.store(row(i) for i in rows)
        done += len(batch)
        if progress:
            progress("extract", done, n)
    stats.extracted = len(representatives) - len(reasons)  # images that really went through the model

    # 4. byte-identical copies take their twin's vectors
    for i, source in copies.items():
        if source in shapes:
            vectors[i] = vectors[source]
            if mirrored is not None:
                mirrored[i] = mirrored[source]
            shapes[i] = shapes[source]
        else:
            reasons[i] = reasons[source]
    stats.identical = sum(1 for i in copies if i in shapes)
    if cache is not None:
        cache.store(row(i) for i in [*reused, *copies] if i in shapes)
    if progress and n:
        progress("extract", n, n)

    keep = [i for i in range(n) if i in shapes]
    images = [
        ImageRecord(files[i].path, files[i].size, files[i].mtime, shapes[i][0], shapes[i][1]) for i in keep
    ]
    skipped = [Skipped(files[i].path, reasons[i]) for i in sorted(reasons)]
    embeddings = Embeddings(vectors[keep], None if mirrored is None else mirrored[keep])
    return images, embeddings, skipped


def _mtime_ns(f: ImageFile) -> int:
    """The file's st_mtime_ns (from discover, or a fresh stat when unknown; -1 if it cannot be read)."""
    if f.mtime_ns >= 0:
        return f.mtime_ns
    try:
        return os.stat(f.path).st_mtime_ns
    except OSError:
        return -1


def _digests(paths: Sequence[str], indices: Sequence[int]) -> dict[int, str]:
    """Content digests of ``paths`` (keyed by ``indices``), read in threads; unreadable files are left out
    (decoding reports them)."""

    def digest(path: str) -> str | None:
        try:
            return content_digest(path)
        except OSError:
            return None

    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="dedup-digest") as pool:
        found = pool.map(digest, paths, chunksize=64)
        return {i: d for i, d in zip(indices, found, strict=True) if d is not None}


def _decode_workers() -> int:
    """Decoder threads: one per core (at most 4). Pillow releases the GIL while decoding and resizing."""
    return max(1, min(4, os.cpu_count() or 1))


def _decoded_batches(
    files: Sequence[ImageFile], extractor: Extractor, config: Config
) -> Iterator[list[_Loaded]]:
    """Yield batches of decoded+prepared images, in order, decoding up to :data:`PREFETCH_BATCHES` batches
    ahead in worker threads (a bounded queue: memory does not grow with the number of files)."""
    size = config.features.batch_size
    draft = extractor.decode_size if config.decode.draft else None

    def load(f: ImageFile) -> _Loaded:
        try:
            image, width, height = open_image(f.path, max_pixels=config.decode.max_pixels, draft_size=draft)
        except ImageError as e:
            return Skipped(f.path, str(e))
        record = ImageRecord(path=f.path, size=f.size, mtime=f.mtime, width=width, height=height)
        return record, extractor.prepare(image)

    with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="dedup-decode") as pool:
        pending: deque[list[Future[_Loaded]]] = deque()
        for start in range(0, len(files), size):
            pending.append([pool.submit(load, f) for f in files[start : start + size]])
            if len(pending) >= PREFETCH_BATCHES:
                yield [fut.result() for fut in pending.popleft()]
        while pending:
            yield [fut.result() for fut in pending.popleft()]
