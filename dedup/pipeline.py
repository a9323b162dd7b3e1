"""Orchestration only: paths -> images -> features -> neighbour graph -> groups -> :class:`ScanResult`.

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from PIL import Image

from dedup.cache import Entry, FeatureCache, Row, content_digest
from dedup.cache import opened as opened_cache
from dedup.cluster import Clustering, Group, cluster_embeddings, dbscan_labels, form_groups
from dedup.config import AUTO, Config
from dedup.embeddings import Embeddings, convert
from dedup.errors import ConfigError, ImageError, InputError
from dedup.features import Extractor, ensure_loaded, make_extractors, uses_mirror
from dedup.images import ImageFile, ImageRecord, Skipped, discover, open_image, stat_root
from dedup.index import build_index, neighbour_graph
from dedup.verify import (
    GRAPH_EPS,
    KeypointCache,
    KeypointStore,
    PairEvidence,
    Thresholds,
    Verifier,
    thresholds_for,
    verification_enabled,
)

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
        seconds: wall time per phase: ``discover``, ``decode_extract``, ``index``, ``cluster``, with
            several extractors or verification ``verify`` (keypoints + matching), and ``grouping`` after
            :func:`cluster_collection`.
        clustering: every image's cluster, after :func:`cluster_collection` (``group.method`` agglomerative
            or kmeans); None otherwise.
        all_embeddings: each extractor's embeddings by name (``embeddings`` is the first one's).
        thresholds: each extractor's effective thresholds by name.
        verified: whether candidate pairs were checked with keypoints (the verify stage ran).
        verifier: the pair decisions of a run with several extractors or verification (None otherwise).
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
    clustering: Clustering | None = None
    sources: ExtractStats | None = None
    all_embeddings: dict[str, Embeddings] = field(default_factory=dict)
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    verified: bool = False
    verifier: Verifier | None = None

    def evidence(self, i: int, keep: int) -> PairEvidence:
        """Why image ``i`` is in the group of ``keep``: the recorded decision for the pair, or (runs with
        one extractor and no verification) its similarity under that extractor."""
        if self.verifier is not None:
            return self.verifier.evaluate(np.array([[i, keep]]))[0]
        name = self.extractor["name"]
        if i == keep:
            return PairEvidence({}, (), False, None, True, "keep")
        sim, flip = self.embeddings.similarity(np.array([i]), np.array([keep]))
        edge = bool(sim[0] >= self.threshold - 1e-6)
        return PairEvidence(
            {name: round(float(sim[0]), 6)},
            (name,) if edge else (),
            bool(flip[0]),
            None,
            edge,
            "similar" if edge else "rejected",
        )

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
    keypoint_cache: KeypointCache | None = None,
) -> ScanResult:
    """Find groups of near-duplicate images under ``paths``. Reads files, never modifies anything.

    Args:
        paths: folders and/or image files to scan.
        config: configuration (``load_config()`` defaults when omitted).
        exclude: folders whose contents are not scanned (e.g. a quarantine folder inside a root).
        progress: optional callback ``(phase, done, total)``; phases ``discover``, ``extract``, ``index``,
            ``keypoints`` and ``verify`` (verify stage), ``cluster``.
        warn: optional callback for one-line warnings (e.g. the offline fallback).
        keypoint_cache: where the verify stage keeps keypoints (in memory for this run when omitted).

    Returns:
        A :class:`ScanResult`.

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    feats = collect_features(paths, config, exclude=exclude, progress=progress, warn=warn)
    extractors, images, all_embeddings = feats.extractors, feats.images, feats.all_embeddings
    extractor, embeddings = feats.extractor, feats.embeddings
    seconds = dict(feats.seconds)
    threshold = effective_threshold(config, extractor)
    eps = float(convert(threshold, "similarity", "cosine"))
    verify = verification_enabled(config, extractors)
    skipped = feats.skipped
    thresholds = {e.name: thresholds_for(e, config) for e in extractors}
    common: dict[str, Any] = {
        "paths": [os.path.abspath(p) for p in paths],
        "images": images,
        "embeddings": embeddings,
        "skipped": skipped,
        "extractor": combined_info(extractors, config) if len(extractors) > 1 else extractor.info(),
        "config": config,
        "threshold": threshold,
        "all_embeddings": {e.name: emb for e, emb in zip(extractors, all_embeddings, strict=True)},
        "thresholds": thresholds,
        "sources": feats.stats,
    }
    if len(extractors) > 1 or verify:
        verifier, groups, splits = _verified_groups(
            images,
            extractors,
            all_embeddings,
            thresholds,
            config,
            verify,
            seconds,
            progress=progress,
            keypoint_cache=keypoint_cache,
        )
        return ScanResult(
            **common, groups=groups, chain_splits=splits, seconds=seconds, verified=verify, verifier=verifier
        )

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

    return ScanResult(**common, groups=groups, chain_splits=splits, seconds=seconds)


def combined_info(extractors: Sequence[Extractor], config: Config) -> dict[str, Any]:
    """The report's ``extractor`` section for several extractors: the usual keys (of the first extractor,
    or of the one that has them), the joined ``name``, and each extractor's own ``info()`` in
    ``extractors``."""
    infos = [e.info() for e in extractors]
    first = infos[0]
    weights = next((i["weights"] for i in infos if i.get("weights") is not None), None)
    pooling = next((i["pooling"] for i in infos if i.get("pooling") is not None), None)
    reasons = [i.get("fallback_reason") for i in infos if i.get("fallback_reason")]
    return {
        "name": "+".join(i["name"] for i in infos),
        "weights": weights,
        "pooling": pooling,
        "input_size": first.get("input_size"),
        "fallback_used": any(i.get("fallback_used") for i in infos),
        "requested": config.features.extractor,
        "fallback_reason": reasons[0] if reasons else None,
        "extractors": infos,
    }


def _verified_groups(
    images: list[ImageRecord],
    extractors: Sequence[Extractor],
    all_embeddings: Sequence[Embeddings],
    thresholds: dict[str, Thresholds],
    config: Config,
    verify: bool,
    seconds: dict[str, float],
    *,
    progress: ProgressFn | None,
    keypoint_cache: KeypointCache | None,
) -> tuple[Verifier, list[Group], int]:
    """Candidates from every extractor's neighbour graph, decided by a :class:`Verifier`, then grouped.

    Each extractor proposes the pairs within its own candidate threshold (its plain threshold when
    verification is off); the union is decided pair by pair (:meth:`Verifier.evaluate`), DBSCAN runs on
    the resulting duplicate graph and the chaining guard keeps only members linked to their kept image.
    """
    n = len(images)
    t0 = time.perf_counter()
    if progress:
        progress("index", 0, n)
    pairs = []
    for ex, emb in zip(extractors, all_embeddings, strict=True):
        th = thresholds[ex.name]
        eps = float(convert(th.candidate if verify else th.plain, "similarity", "cosine"))
        graph = neighbour_graph(
            emb,
            eps=eps,
            k=config.index.neighbours,
            n_trees=config.index.n_trees,
            search_k=config.index.search_k,
            seed=config.index.seed,
        )
        upper = sp.triu(graph, k=1).tocoo()
        pairs.append(np.stack([upper.row, upper.col], axis=1))
    candidates = np.unique(np.concatenate(pairs), axis=0) if pairs else np.empty((0, 2), dtype=np.int64)
    if progress:
        progress("index", n, n)
    seconds["index"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    workers = max(1, min(4, os.cpu_count() or 1))
    store = KeypointStore(images, config, cache=keypoint_cache, workers=workers) if verify else None
    verifier = Verifier(
        names=[e.name for e in extractors],
        embeddings=list(all_embeddings),
        thresholds=[thresholds[e.name] for e in extractors],
        verify=verify,
        store=store,
        config=config.verify,
    )
    verifier.evaluate(candidates, workers=workers, progress=progress)
    graph = verifier.graph(n)
    seconds["verify"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    labels = dbscan_labels(graph, eps=GRAPH_EPS, min_samples=config.cluster.min_samples)
    threshold = thresholds[extractors[0].name].plain
    groups, splits = form_groups(
        labels,
        all_embeddings[0],
        graph,
        images,
        threshold=threshold,
        policy=config.keep.policy,
        link=verifier.link,
    )
    if progress:
        progress("cluster", n, n)
    seconds["cluster"] = time.perf_counter() - t0
    return verifier, groups, splits


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


_Loaded = tuple[ImageRecord, list[np.ndarray]] | Skipped

# Views of the prepared (square) arrays embedded besides the image itself when features.rotations is on:
# name -> (quarter turns counter-clockwise, mirrored first). "vflip" is the mirror image turned by 180.
ROTATED_VIEWS = (("rot90", 1, False), ("rot180", 2, False), ("rot270", 3, False))
MIRRORED_ROTATED_VIEWS = (("hflip+rot90", 1, True), ("vflip", 2, True), ("hflip+rot270", 3, True))


def view_plan(extractor: Extractor, config: Config, shape: tuple[int, ...]) -> list[tuple[str, int, bool]]:
    """Which rotated views of ``extractor``'s prepared arrays (of ``shape``) are embedded.

    Only weight-free extractors (cheap to run several times) that are not already invariant to orientation,
    with square prepared arrays, and only with ``features.rotations`` (resolved from ``auto`` by
    :func:`collect_features`).
    """
    if config.features.rotations is not True or not extractor.weight_free:
        return []
    if extractor.orientation_invariant or len(shape) < 2 or shape[0] != shape[1]:
        return []
    mirrored = uses_mirror(config.features, extractor)
    return list(ROTATED_VIEWS) + (list(MIRRORED_ROTATED_VIEWS) if mirrored else [])


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
        images: every image that decoded, aligned with the rows of every embeddings.
        extractors: the extractors that really ran (after any offline fallback), in configured order; a
            model may be unloaded when every vector came from the cache.
        all_embeddings: one :class:`Embeddings` per extractor (views such as the mirror image included).
        skipped: files that could not be used, with reasons, sorted by path.
        config: the configuration used.
        stats: where the vectors came from.
        seconds: wall time of ``discover`` and ``decode_extract``.
    """

    paths: list[str]
    images: list[ImageRecord]
    extractors: list[Extractor]
    all_embeddings: list[Embeddings]
    skipped: list[Skipped]
    config: Config
    stats: ExtractStats
    seconds: dict[str, float]

    @property
    def extractor(self) -> Extractor:
        """The first extractor: its similarity is the one reported, and ``similar``/``tune`` rank by it."""
        return self.extractors[0]

    @property
    def embeddings(self) -> Embeddings:
        """The first extractor's embeddings."""
        return self.all_embeddings[0]


def collect_features(
    paths: Sequence[str | Path],
    config: Config | None = None,
    *,
    exclude: Sequence[Path] = (),
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
    first_only: bool = False,
) -> FeatureSet:
    """Discover the images under ``paths`` and get their features, through the feature cache.

    This is the first half of :func:`find_duplicates`, and where ``similar`` and ``tune`` get their features
    (``first_only``: only the first configured extractor, which they rank by). Unchanged files are read from
    the cache (``cache.enabled``, ``cache.dir``) without being decoded; when every file is cached no model
    is loaded (TensorFlow is not imported). Reads files, never modifies anything but the cache.

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    seconds: dict[str, float] = {}
    for path in paths:  # cheap checks first: a typo in a path must not wait for TensorFlow
        stat_root(path)
    # Weights before the walk: a missing weights file should fail before a long walk over the folders.
    extractors = make_extractors(config.features, warn=warn, lazy=True)
    if config.features.rotations == AUTO:  # rotated views serve as candidates for keypoint verification
        rotations = verification_enabled(config, extractors)
        config = replace(config, features=replace(config.features, rotations=rotations))
    if first_only:
        extractors = extractors[:1]

    t0 = time.perf_counter()
    if progress:
        progress("discover", 0, None)
    files, skipped = discover(paths, config.discover, exclude=exclude, progress=progress)
    seconds["discover"] = time.perf_counter() - t0
    if progress:
        progress("discover", len(files), len(files))

    t0 = time.perf_counter()
    stats = ExtractStats()
    with ExitStack() as stack:
        caches = [
            stack.enter_context(opened_cache(config.cache, *_cache_identity(e, config), warn))
            for e in extractors
        ]
        images, all_embeddings, failed = extract_all(
            files, extractors, config, progress=progress, caches=caches, stats=stats
        )
    seconds["decode_extract"] = time.perf_counter() - t0
    return FeatureSet(
        paths=[os.path.abspath(p) for p in paths],
        images=images,
        extractors=list(extractors),
        all_embeddings=all_embeddings,
        skipped=sorted(skipped + failed, key=lambda s: s.path),
        config=config,
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
    """:func:`extract_all` with one extractor (and its cache)."""
    images, embeddings, skipped = extract_all(
        files, [extractor], config, progress=progress, caches=[cache], stats=stats
    )
    return images, embeddings[0], skipped


def _layout(extractor: Extractor, config: Config) -> list[tuple[str, int, bool]]:
    """The views ``extractor`` embeds for every image, in storage order: ``(name, quarter turns, mirrored
    first)``; the image itself, its mirror image with :func:`~dedup.features.uses_mirror`, then the rotated
    views of :func:`view_plan`."""
    shape = extractor.prepare(Image.new("RGB", (32, 32))).shape
    views = [("identity", 0, False)] + (
        [("hflip", 0, True)] if uses_mirror(config.features, extractor) else []
    )
    return views + view_plan(extractor, config, shape)


def _cache_identity(extractor: Extractor, config: Config) -> tuple[dict[str, Any], int]:
    """Identity and row length of ``extractor``'s cache: each cached vector is every view of
    :func:`_layout` concatenated."""
    layout = _layout(extractor, config)
    info = {**extractor.info(), "views": [name for name, _, _ in layout]}
    return info, extractor.dim * len(layout)


def extract_all(
    files: Sequence[ImageFile],
    extractors: Sequence[Extractor],
    config: Config,
    *,
    progress: ProgressFn | None = None,
    caches: Sequence[FeatureCache | None] | None = None,
    stats: ExtractStats | None = None,
) -> tuple[list[ImageRecord], list[Embeddings], list[Skipped]]:
    """Vectors of ``files`` for every extractor: from the caches when they have them, else decoded (once)
    in threads and embedded in batches.

    1. Files whose path, size and modification time match a row of every extractor's cache take those
       vectors and size (no decode).
    2. Exact-duplicate pre-pass: files sharing their size with another file of the scan (every remaining
       file when caches are used, so that moved files can be found by content) get a blake2b digest of
       their bytes. Byte-identical files are embedded once and the others take copies of the vectors (so
       they group with similarity 1.0); a file whose bytes every cache knows under another path reuses them.
    3. The rest are decoded in worker threads while the models run, at most :data:`PREFETCH_BATCHES`
       batches ahead (memory stays flat), and embedded in batches of ``features.batch_size``. With
       mirroring (:func:`~dedup.features.uses_mirror`) each batch is embedded a second time mirrored
       (prepared arrays are (height, width[, channels]), so the mirror image is a flip of axis 2); with
       ``features.rotations`` weight-free extractors also embed the rotated views of :func:`view_plan`.
       New vectors are written to the caches batch by batch.

    Args:
        files: images to embed (as returned by :func:`~dedup.images.discover`).
        extractors: the extractors (lazily made ones are loaded here, only if something must be extracted).
        config: configuration (``features``, ``decode``).
        progress: optional ``(phase, done, total)`` callback, phase ``"extract"``.
        caches: an open :class:`~dedup.cache.FeatureCache` per extractor (see :func:`_cache_identity`), or
            None entries / None for no cache.
        stats: filled with the counts of where vectors came from, if given.

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded (in the order of ``files``), one
        :class:`Embeddings` per extractor (float32 rows aligned with ``images``), and the files that could
        not be decoded.
    """
    stats = stats if stats is not None else ExtractStats()
    cache_list = list(caches) if caches is not None else [None] * len(extractors)
    live = [c for c in cache_list if c is not None]
    n = len(files)
    layouts = [_layout(e, config) for e in extractors]
    # per extractor: (n, dim * views) float32, every view of _layout side by side
    stacks = [
        np.zeros((n, e.dim * len(lay)), dtype=np.float32) for e, lay in zip(extractors, layouts, strict=True)
    ]
    shapes: dict[int, tuple[int, int]] = {}  # index -> (width, height) of the images that decoded
    reasons: dict[int, str] = {}  # index -> skip reason
    done = 0
    if progress:
        progress("extract", 0, n)

    def take(i: int, entries: Sequence[Entry]) -> None:
        for e, entry in enumerate(entries):
            stacks[e][i] = entry.vector
        shapes[i] = (entries[0].width, entries[0].height)

    def store(indices: Sequence[int]) -> None:
        for e, cache in enumerate(cache_list):
            if cache is not None:
                cache.store(
                    Row(
                        files[i].path,
                        files[i].size,
                        _mtime_ns(files[i]),
                        digests.get(i),
                        *shapes[i],
                        stacks[e][i],
                        None,
                    )
                    for i in indices
                )

    # 1. the caches, by path + size + mtime: an image counts as cached when every extractor has it
    todo = list(range(n))
    digests: dict[int, str] = {}
    if live and len(live) == len(cache_list):
        keys = [(f.path, f.size, _mtime_ns(f)) for f in files]
        found = [c.lookup(keys, mirror=False) for c in live]
        hits = set(found[0]).intersection(*found[1:])
        for i in hits:
            take(i, [f[i] for f in found])
        stats.cached = done = len(hits)
        todo = [i for i in todo if i not in hits]
        if progress and done:
            progress("extract", done, n)

    # 2. exact duplicates (size first, then content digest), and the caches by content
    sizes = Counter(f.size for f in files)
    need = todo if live else [i for i in todo if sizes[files[i].size] > 1]
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
            if live and len(live) == len(cache_list):
                known = [c.by_content(files[i].size, digest, mirror=False) for c in live]
                if all(k is not None for k in known):
                    take(i, [k for k in known if k is not None])
                    reused.append(i)
                    continue
        representatives.append(i)
    stats.reused = len(reused)
    done += len(reused)

    # 3. decode (once) + embed with every extractor what is left
    if representatives:
        for extractor in extractors:
            ensure_loaded(extractor)
    position = 0
    for batch in _decoded_batches([files[i] for i in representatives], extractors, config):
        indices = representatives[position : position + len(batch)]
        position += len(batch)
        ok = [(i, item) for i, item in zip(indices, batch, strict=True) if not isinstance(item, Skipped)]
        for i, item in zip(indices, batch, strict=True):
            if isinstance(item, Skipped):
                reasons[i] = item.reason
        if ok:
            rows = [i for i, _ in ok]
            for e, (extractor, layout) in enumerate(zip(extractors, layouts, strict=True)):
                batch_e = np.stack([arrays[e] for _, (_, arrays) in ok])
                parts = []
                for _, turns, flip in layout:
                    x = np.flip(batch_e, axis=2) if flip else batch_e
                    x = np.rot90(x, turns, axes=(1, 2)) if turns else x
                    parts.append(extractor.embed(np.ascontiguousarray(x)))
                stacks[e][rows] = np.concatenate(parts, axis=1)
            for i, (record, _) in ok:
                shapes[i] = (record.width, record.height)
            store(rows)
        done += len(batch)
        if progress:
            progress("extract", done, n)
    stats.extracted = len(representatives) - len(reasons)  # images that really went through the models

    # 4. byte-identical copies take their twin's vectors
    for i, source in copies.items():
        if source in shapes:
            for stack in stacks:
                stack[i] = stack[source]
            shapes[i] = shapes[source]
        else:
            reasons[i] = reasons[source]
    stats.identical = sum(1 for i in copies if i in shapes)
    store([i for i in [*reused, *copies] if i in shapes])
    if progress and n:
        progress("extract", n, n)

    keep = [i for i in range(n) if i in shapes]
    images = [
        ImageRecord(files[i].path, files[i].size, files[i].mtime, shapes[i][0], shapes[i][1]) for i in keep
    ]
    skipped = [Skipped(files[i].path, reasons[i]) for i in sorted(reasons)]
    out = []
    for extractor, layout, stack in zip(extractors, layouts, stacks, strict=True):
        d = extractor.dim
        kept = stack[keep]
        views = {
            name: np.ascontiguousarray(kept[:, d * v : d * (v + 1)]) for v, (name, _, _) in enumerate(layout)
        }
        out.append(
            Embeddings(
                views.pop("identity"),
                views.pop("hflip", None),
                tuple(views.items()),
            )
        )
    return images, out, skipped


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
    files: Sequence[ImageFile], extractors: Sequence[Extractor], config: Config
) -> Iterator[list[_Loaded]]:
    """Yield batches of decoded+prepared images, in order, decoding up to :data:`PREFETCH_BATCHES` batches
    ahead in worker threads (a bounded queue: memory does not grow with the number of files)."""
    size = config.features.batch_size
    sizes = [e.decode_size for e in extractors]
    draft = None if not config.decode.draft or None in sizes else max(s for s in sizes if s is not None)

    def load(f: ImageFile) -> _Loaded:
        try:
            image, width, height = open_image(f.path, max_pixels=config.decode.max_pixels, draft_size=draft)
        except ImageError as e:
            return Skipped(f.path, str(e))
        record = ImageRecord(path=f.path, size=f.size, mtime=f.mtime, width=width, height=height)
        return record, [e.prepare(image) for e in extractors]

    with ThreadPoolExecutor(max_workers=_decode_workers(), thread_name_prefix="dedup-decode") as pool:
        pending: deque[list[Future[_Loaded]]] = deque()
        for start in range(0, len(files), size):
            pending.append([pool.submit(load, f) for f in files[start : start + size]])
            if len(pending) >= PREFETCH_BATCHES:
                yield [fut.result() for fut in pending.popleft()]
        while pending:
            yield [fut.result() for fut in pending.popleft()]


# ----------------------------------------------------------------------------------------- similarity search


@dataclass(frozen=True)
class Match:
    """One result of :func:`find_similar`.

    Attributes:
        image: the matching image.
        similarity: cosine similarity to the query image, in [-1, 1].
        mirrored: True when the best match was with the mirror image of one of the two.
    """

    image: ImageRecord
    similarity: float
    mirrored: bool


@dataclass
class SimilarResult:
    """What :func:`find_similar` found.

    Attributes:
        query: the query image (decoded).
        matches: up to ``k`` images, most similar first (ties broken by path).
        collection: the images searched, their features and skipped files.
    """

    query: ImageRecord
    matches: list[Match]
    collection: FeatureSet

    @property
    def extractor(self) -> dict[str, Any]:
        return self.collection.extractor.info()


def find_similar(
    image: str | Path,
    paths: Sequence[str | Path],
    config: Config | None = None,
    *,
    k: int = 10,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> SimilarResult:
    """The ``k`` images under ``paths`` most similar to ``image``.

    The collection's features come from :func:`collect_features`; the query is embedded by the same
    extractor with the same configuration (:func:`extract_features`, mirror image included when
    ``features.mirror`` is on). Candidates come from an Annoy forest (``index`` settings of ``config``)
    queried with the query's vector and its mirror image's; their similarity is then computed exactly with
    :meth:`Embeddings.similarity`, so a flipped copy matches as well as a direct one. The query file itself
    (by identity, also through a symlink) is never among the results.

    Raises:
        InputError: ``image`` or a path does not exist, or ``image`` cannot be decoded; ``k`` < 1.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    config = config or Config()
    query_path, st = stat_root(image)
    if not os.path.isfile(query_path):
        raise InputError(f"query image {image} is not a file")
    collection = collect_features(
        paths, config, exclude=[Path(query_path)], progress=progress, warn=warn, first_only=True
    )
    query_file = ImageFile(path=query_path, size=st.st_size, mtime=st.st_mtime)
    extractor, cfg = collection.extractor, collection.config
    with opened_cache(cfg.cache, *_cache_identity(extractor, cfg), warn) as cache:  # the query may be cached
        decoded, query_emb, failed = extract_features([query_file], extractor, cfg, cache=cache)
    if failed:
        raise InputError(f"cannot use query image {image}: {failed[0].reason}")
    n = len(collection.images)
    if n == 0:
        return SimilarResult(query=decoded[0], matches=[], collection=collection)

    emb = collection.embeddings
    combined = emb.concat(query_emb)
    if progress:
        progress("index", 0, n)
    index = build_index(emb.vectors, n_trees=config.index.n_trees, seed=config.index.seed)
    want = min(n, max(2 * k, k + 10))  # Annoy is approximate: ask for more, rank exactly
    found = set(index.get_nns_by_vector(query_emb.vectors[0], want, config.index.search_k))
    if query_emb.mirrored is not None:
        found.update(index.get_nns_by_vector(query_emb.mirrored[0], want, config.index.search_k))
    if progress:
        progress("index", n, n)
    candidates = np.fromiter(sorted(found), dtype=np.int64)
    sims, flips = combined.similarity(candidates, np.full(len(candidates), n))
    order = sorted(range(len(candidates)), key=lambda j: (-sims[j], collection.images[candidates[j]].path))[
        :k
    ]
    matches = [Match(collection.images[candidates[j]], float(sims[j]), bool(flips[j])) for j in order]
    return SimilarResult(query=decoded[0], matches=matches, collection=collection)
