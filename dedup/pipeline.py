"""Orchestration only: paths -> images -> features -> neighbour graph -> groups -> :class:`ScanResult`.

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from dedup.across import pair_mask as across_mask
from dedup.across import reference_folders, scan_roots
from dedup.cache import VerifyCache, extractor_identity, file_key, opened_verify
from dedup.cache import opened as opened_cache
from dedup.calibrate import Calibration, calibrate, needs_calibration
from dedup.calibrate import apply as apply_calibration
from dedup.cluster import Group, dbscan_labels, form_groups
from dedup.config import AUTO, Config
from dedup.distributed import RaySession
from dedup.distributed import connect as connect_ray
from dedup.embeddings import TOLERANCE, Embeddings, to_distance
from dedup.errors import ConfigError, InputError
from dedup.extract import ExtractStats, FeatureSet, cache_identity, collect_features, extract_features
from dedup.facts import FACTS_PARAMS, ImageFacts
from dedup.facts import read_all as read_facts
from dedup.features import Extractor
from dedup.ignore import PairMask, either, scan_rules
from dedup.images import ImageFile, ImageRecord, Skipped, stat_root
from dedup.index import EXACT_MAX, neighbour_graph
from dedup.partition import Clustering, cluster_embeddings
from dedup.shards import PartitionResult, PartitionWork, merge, partition_images, search_partition, works
from dedup.verify import (
    GRAPH_EPS,
    KeypointStore,
    PairEvidence,
    Thresholds,
    Verifier,
    promise,
    thresholds_for,
    verification_enabled,
)

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]
# Runs dedup.shards.search_partition over every partition's work, yielding the results in order.
PartitionMap = Callable[[Iterable[PartitionWork]], Iterator[PartitionResult]]


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
        verifier: the run's pair decisions (every group member's evidence comes from it).
        calibrations: the calibrated extractors' :class:`~dedup.calibrate.Calibration` by name.
        sources: where the vectors came from (feature cache, identical files, extraction).
        scale: where the scan ran: ``engine`` (local or ray) and ``partitions`` (1 = one index), and for a
            partitioned search ``border_images``, ``largest_partition`` and ``candidates``.
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
    scale: dict[str, Any] = field(default_factory=lambda: {"engine": "local", "partitions": 1})
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    def evidence(self, i: int, keep: int) -> PairEvidence:
        """Why image ``i`` is in the group of ``keep``: the verifier's decision for the pair."""
        if self.verifier is None:
            raise ValueError("this ScanResult holds no pair decisions (it was made without a Verifier)")
        return self.verifier.evaluate(np.array([[i, keep]]))[0]

    @property
    def blank(self) -> list[int]:
        """Images with no detail to compare (indices into ``images``): some extractor gave them the zero
        vector, as phash and thumb do for a blank or nearly blank image, so that descriptor matches them to
        nothing."""
        embeddings = list(self.all_embeddings.values()) or [self.embeddings]
        zero = np.zeros(len(self.images), dtype=bool)
        for emb in embeddings:
            if len(emb.vectors) == len(self.images):
                zero |= ~np.any(emb.vectors, axis=1)
        return np.flatnonzero(zero).tolist()

    def __repr__(self) -> str:
        return (
            f"ScanResult({len(self.groups)} groups, {self.duplicates} duplicates of {len(self.images)} "
            f"images, {len(self.skipped)} skipped; {self.extractor.get('name')})"
        )

    def _repr_html_(self) -> str:
        """The compact HTML summary a notebook shows (see :meth:`dedup.report.Report._repr_html_`)."""
        from dedup.report.schema import from_result

        return from_result(self)._repr_html_()

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per group member, for ``pandas.DataFrame(result.rows())``."""
        from dedup.report.schema import from_result

        return from_result(self).rows()

    @property
    def duplicates(self) -> int:
        """Images that could go: every group member except the kept one."""
        return sum(len(g.members) - 1 for g in self.groups)

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by removing every non-kept member."""
        return sum(self.images[m].size for g in self.groups for m in g.members if m != g.keep)


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
            ``verify`` (verify stage), ``cluster``.
        warn: optional callback for one-line warnings (e.g. the offline fallback).

    Returns:
        A :class:`ScanResult`.

    Raises:
        InputError: a path does not exist.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    config = config or Config()
    roots = scan_roots(paths, config)  # with the reference and --across folders
    for path in roots:  # a typo in a path is reported before connecting to a cluster
        stat_root(path)
    with engine_session(config) as session:
        feats = collect_features(
            roots,
            config,
            exclude=exclude,
            progress=progress,
            warn=warn,
            runner=session.runner if session is not None else None,
        )
        return duplicates_of(feats, config, progress=progress, warn=warn, session=session)


def duplicates_of(
    feats: FeatureSet,
    config: Config | None = None,
    *,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
    session: RaySession | None = None,
) -> ScanResult:
    """The second half of :func:`find_duplicates`: the duplicate groups of images whose features are known
    (candidates, decisions, DBSCAN, chaining guard, keep policy), honouring the ignore list and
    ``cluster.across``; partitions run on the Ray ``session`` when there is one. :mod:`dedup.saved_index`
    groups the new images of an index update with it.
    """
    config = config or feats.config
    scale: dict[str, Any] = {"engine": config.scale.engine, "partitions": 1}
    if session is not None:
        scale["resent"] = session.resent
    extractors, images = feats.extractors, feats.images
    seconds = dict(feats.seconds)
    verify = verification_enabled(config, extractors)
    thresholds, calibrations = run_thresholds(feats, config, progress=progress, warn=warn)
    ignored = scan_rules(images, config, warn)
    with opened_verify(config.cache, warn) as verify_cache:
        verifier, groups, splits, images = decide_groups(
            images,
            extractors,
            feats.all_embeddings,
            thresholds,
            config,
            verify,
            seconds,
            progress=progress,
            cache=verify_cache,
            blocked=either(ignored, across_mask(images, config)),
            apart=ignored,
            partitions=(session.map_partitions if session is not None else _map_local),
            scale=scale,
        )
    return ScanResult(
        paths=list(feats.paths),
        images=images,
        embeddings=feats.embeddings,
        skipped=feats.skipped,
        groups=groups,
        extractor=combined_info(extractors, config) if len(extractors) > 1 else feats.extractor.info(),
        config=config,
        threshold=thresholds[feats.extractor.name].plain,
        chain_splits=splits,
        seconds=seconds,
        sources=feats.stats,
        all_embeddings={e.name: emb for e, emb in zip(extractors, feats.all_embeddings, strict=True)},
        thresholds=thresholds,
        verified=verify,
        verifier=verifier,
        scale=scale,
        calibrations=calibrations,
    )


@contextmanager
def engine_session(config: Config) -> Iterator[RaySession | None]:
    """The Ray cluster connection of ``scale.engine: ray`` for one scan, or None for the local engine.

    Raises:
        EngineError: Ray is not installed or no cluster answers at ``ray.address``.
    """
    if config.scale.engine != "ray":
        yield None
        return
    with connect_ray(config) as session:
        yield session


def _map_local(items: Iterable[PartitionWork]) -> Iterator[PartitionResult]:
    """The local engine's partitions: one after the other, in this process (one partition in memory)."""
    for work in items:
        yield search_partition(work)


def run_thresholds(
    feats: FeatureSet, config: Config, *, progress: ProgressFn | None = None, warn: WarnFn | None = None
) -> tuple[dict[str, Thresholds], dict[str, Calibration]]:
    """Each extractor's effective thresholds: configured, the extractor's defaults, or calibrated on the
    collection (:mod:`dedup.calibrate`: ``cluster.threshold: calibrate``, or ``auto`` for extractors without
    tuned defaults). The weight-free extractors at ``auto`` cost nothing here."""
    thresholds = {e.name: thresholds_for(e, config) for e in feats.extractors}
    calibrations: dict[str, Calibration] = {}
    for ex, emb in zip(feats.extractors, feats.all_embeddings, strict=True):
        if not needs_calibration(ex, config):
            continue
        if progress:
            progress("calibrate", 0, None)
        found = calibrate(feats.images, ex, emb, feats.config, warn=warn)
        if progress:
            progress("calibrate", 1, 1)
        if found is not None:
            calibrations[ex.name] = found
            thresholds[ex.name] = apply_calibration(thresholds[ex.name], found, config)
    return thresholds, calibrations


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


def _facts(records: Sequence[ImageRecord], config: Config, cache: VerifyCache | None) -> list[ImageFacts]:
    """The :mod:`dedup.facts` of ``records``, from the feature cache where it holds them for the same file
    (size and mtime), else read from the files and stored."""
    params = f"{FACTS_PARAMS}/max-pixels-{config.decode.max_pixels}"
    files = [(r.path, r.size, r.mtime) for r in records]
    stored = cache.get_facts(params, files) if cache is not None else {}
    found: dict[str, ImageFacts] = {}
    for path, text in stored.items():
        with suppress(TypeError, ValueError):
            found[path] = ImageFacts(**json.loads(text))
    missing = [r for r in records if r.path not in found]
    read = read_facts([r.path for r in missing], max_pixels=config.decode.max_pixels)
    found.update((r.path, f) for r, f in zip(missing, read, strict=True))
    if cache is not None and missing:
        cache.put_facts(
            params,
            [(r.path, r.size, r.mtime, json.dumps(asdict(f))) for r, f in zip(missing, read, strict=True)],
        )
    return [found[r.path] for r in records]


def decide_groups(
    images: list[ImageRecord],
    extractors: Sequence[Extractor],
    all_embeddings: Sequence[Embeddings],
    thresholds: dict[str, Thresholds],
    config: Config,
    verify: bool,
    seconds: dict[str, float],
    *,
    progress: ProgressFn | None,
    cache: VerifyCache | None,
    blocked: PairMask | None = None,
    apart: PairMask | None = None,
    partitions: PartitionMap = _map_local,
    scale: dict[str, Any] | None = None,
    store: KeypointStore | None = None,
) -> tuple[Verifier, list[Group], int, list[ImageRecord]]:
    """Candidates from every extractor's neighbour graph, decided by a :class:`Verifier`, then grouped.

    Each extractor proposes the pairs within its own candidate threshold (its plain threshold when
    verification is off); the union is decided most promising first within ``verify.budget``
    (:meth:`Verifier.decide_candidates`), DBSCAN runs on the resulting duplicate graph and the chaining
    guard keeps only members linked to their kept image. A single extractor without verification is the
    same path: its pairs within the threshold are edges. ``blocked`` pairs are never edges, ``apart``
    pairs never share a group (:mod:`dedup.ignore`). The images that end up in a group come back with their
    :mod:`dedup.facts` (for the keep policy). ``store`` reuses the keypoints of an earlier call (``dedup
    tune`` decides one collection at many thresholds).

    With ``scale.partitions`` > 1 the candidates are found and decided partition by partition instead
    (:mod:`dedup.shards`, each partition run by ``partitions``: in this process, or as Ray tasks), and their
    decisions merged before DBSCAN; ``scale`` is then filled with the partitions' figures.
    """
    n = len(images)
    workers = max(1, min(4, os.cpu_count() or 1))
    if verify and store is None:
        store = KeypointStore(images, config, cache=cache, workers=workers)
    verifier = Verifier(
        names=[e.name for e in extractors],
        embeddings=list(all_embeddings),
        thresholds=[thresholds[e.name] for e in extractors],
        verify=verify,
        store=store,
        config=config.verify,
        cache=cache,
        workers=workers,
        blocked=blocked,
    )
    if config.scale.partitions > 1 and n > 1:
        _partitioned(verifier, images, all_embeddings, config, seconds, partitions, scale, progress)
    else:
        _single_index(
            verifier, images, extractors, all_embeddings, thresholds, config, seconds, progress, cache
        )
    return _grouped(
        verifier, images, extractors, all_embeddings, thresholds, config, seconds, progress, apart, cache
    )


def _partitioned(
    verifier: Verifier,
    images: list[ImageRecord],
    all_embeddings: Sequence[Embeddings],
    config: Config,
    seconds: dict[str, float],
    partitions: PartitionMap,
    scale: dict[str, Any] | None,
    progress: ProgressFn | None,
) -> None:
    """Candidates found and decided per partition (:mod:`dedup.shards`), merged into ``verifier``; pairs
    the ignore list or ``--across`` blocks are then decided again by ``verifier`` (as ``ignored``)."""
    t0 = time.perf_counter()
    sc = config.scale
    if progress:
        progress("index", 0, len(images))
    parts = partition_images(
        all_embeddings[0], sc.partitions, sample=sc.sample, border=sc.border, seed=sc.seed
    )
    if progress:
        progress("index", len(images), len(images))
    seconds["index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    thresholds = verifier.thresholds
    proposed = merge(
        partitions(works(parts, images, all_embeddings, verifier.names, thresholds, config, verifier.verify)),
        verifier,
    )
    if verifier.blocked is not None and verifier.evidence:
        keys = np.array(sorted(verifier.evidence), dtype=np.int64)
        off = keys[verifier.blocked(keys[:, 0], keys[:, 1])]
        for i, j in off.tolist():
            del verifier.evidence[(i, j)]
        verifier.evaluate(off)
    seconds["verify"] = time.perf_counter() - t0
    if scale is not None:
        scale.update(
            partitions=parts.count,
            border_images=parts.border,
            largest_partition=parts.largest,
            candidates=proposed,
        )


def _single_index(
    verifier: Verifier,
    images: list[ImageRecord],
    extractors: Sequence[Extractor],
    all_embeddings: Sequence[Embeddings],
    thresholds: dict[str, Thresholds],
    config: Config,
    seconds: dict[str, float],
    progress: ProgressFn | None,
    cache: VerifyCache | None,
) -> None:
    """Every extractor's neighbour graph over all images, its candidates decided by ``verifier``."""
    verify = verifier.verify
    n = len(images)
    t0 = time.perf_counter()
    pairs = []
    files = "\0".join(file_key(im.path, im.size, im.mtime) for im in images) if cache is not None else ""
    for e, (ex, emb) in enumerate(zip(extractors, all_embeddings, strict=True)):
        th = thresholds[ex.name]
        eps = float(to_distance(th.candidate if verify else th.plain))
        key = _candidates_key(ex, config, eps, files) if cache is not None else ""
        found = cache.get_candidates(key) if cache is not None else None
        if found is None:
            graph = neighbour_graph(
                emb,
                eps=eps,
                k=config.index.neighbours,
                n_trees=config.index.n_trees,
                search_k=config.index.search_k,
                seed=config.index.seed,
                progress=_offset(progress, "index", e * n, len(extractors) * n),
            )
            upper = sp.triu(graph, k=1).tocoo()
            found = np.stack([upper.row, upper.col], axis=1).astype(np.int64)
            if cache is not None:
                cache.put_candidates(key, found)
        elif progress:
            progress("index", (e + 1) * n, len(extractors) * n)
        pairs.append(found)
    candidates = np.unique(np.concatenate(pairs), axis=0) if pairs else np.empty((0, 2), dtype=np.int64)
    seconds["index"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    verifier.decide_candidates(candidates, budget=config.verify.budget, progress=progress)
    if verify or len(extractors) > 1:
        seconds["verify"] = time.perf_counter() - t0


def _grouped(
    verifier: Verifier,
    images: list[ImageRecord],
    extractors: Sequence[Extractor],
    all_embeddings: Sequence[Embeddings],
    thresholds: dict[str, Thresholds],
    config: Config,
    seconds: dict[str, float],
    progress: ProgressFn | None,
    apart: PairMask | None,
    cache: VerifyCache | None,
) -> tuple[Verifier, list[Group], int, list[ImageRecord]]:
    """DBSCAN on the verifier's duplicate graph, the facts of grouped images (cached in ``cache``), the
    chaining guard."""
    t0 = time.perf_counter()
    graph = verifier.graph(len(images))
    labels = dbscan_labels(graph, eps=GRAPH_EPS, min_samples=config.cluster.min_samples)
    grouped = np.flatnonzero(labels >= 0).tolist()
    images = list(images)
    for i, facts in zip(grouped, _facts([images[i] for i in grouped], config, cache), strict=True):
        images[i] = replace(images[i], **asdict(facts))
    threshold = thresholds[extractors[0].name].plain
    groups, splits = form_groups(
        labels,
        all_embeddings[0],
        graph,
        images,
        threshold=threshold,
        policy=config.keep.policy,
        link=verifier.link,
        progress=progress,
        reference=reference_folders(config),
        apart=apart,
    )
    seconds["cluster"] = time.perf_counter() - t0
    return verifier, groups, splits, images


def _candidates_key(extractor: Extractor, config: Config, eps: float, files: str) -> str:
    """Identity of one extractor's neighbour search: its vectors' identity, the search settings and every
    scanned file (path, size, mtime, in order); equal keys give equal candidate pairs."""
    info, _ = cache_identity(extractor, config)
    index = config.index
    text = (
        f"{extractor_identity(info)}\0{eps!r}\0{index.neighbours}\0{index.n_trees}\0{index.search_k}\0"
        f"{index.seed}\0{EXACT_MAX}\0{files}"
    )
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _offset(progress: ProgressFn | None, phase: str, offset: int, total: int) -> ProgressFn | None:
    """A callback that reports a part of a phase (``done`` counted from ``offset``) as the whole phase."""
    if progress is None:
        return None

    def report(_: str, done: int, __: int | None) -> None:
        progress(phase, offset + done, total)

    return report


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


# ----------------------------------------------------------------------------------------- similarity search


@dataclass(frozen=True)
class Match:
    """One result of :func:`find_similar`.

    Attributes:
        image: the matching image.
        similarity: cosine similarity to the query image of the first extractor, in [-1, 1].
        mirrored: True when the best match was with the mirror image of one of the two.
        duplicate: the scan's pair decision calls the two duplicates (the same extractors, thresholds and
            keypoint verification as ``find_duplicates``).
        evidence: the pair decision: ``similar`` (a sure threshold reached, or the plain one without
            verification), ``verified`` (keypoints agree), ``rejected``, or None when not decided (no
            extractor proposed the pair).
        similarities: each extractor's similarity by name.
    """

    image: ImageRecord
    similarity: float
    mirrored: bool
    duplicate: bool = False
    evidence: str | None = None
    similarities: dict[str, float] = field(default_factory=dict)


@dataclass
class SimilarResult:
    """What :func:`find_similar` found.

    Attributes:
        query: the query image (decoded).
        matches: up to ``k`` images: the query's duplicates first, then the most similar; each part by
            similarity (ties broken by path).
        collection: the images searched, their features and skipped files.
        thresholds: each extractor's effective thresholds (calibrated ones included).
        verified: whether candidates were checked with keypoints.
    """

    query: ImageRecord
    matches: list[Match]
    collection: FeatureSet
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    verified: bool = False

    @property
    def extractor(self) -> dict[str, Any]:
        extractors = self.collection.extractors
        if len(extractors) > 1:
            return combined_info(extractors, self.collection.config)
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
    """The ``k`` images under ``paths`` most similar to ``image``, found the way ``find_duplicates`` finds
    duplicates.

    The collection's features come from :func:`collect_features` with every configured extractor and view
    (mirror, rotations); the query is embedded by the same extractors (:func:`extract_features`). Each
    extractor's similarity of the query to **every** image is computed exactly (views included, no
    approximate index), so no match depends on ``k``. The pairs any extractor proposes (its candidate
    threshold, or its plain one without verification) are decided by the scan's :class:`Verifier` with the
    scan's thresholds (calibrated ones included): a copy that ``scan`` pairs with the query is a duplicate
    here, and duplicates come first. The query file itself (by identity, also through a symlink) is never
    among the results.

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
    collection = collect_features(paths, config, exclude=[Path(query_path)], progress=progress, warn=warn)
    query_file = ImageFile(path=query_path, size=st.st_size, mtime=st.st_mtime)
    cfg = collection.config
    query_embs: list[Embeddings] = []
    decoded: list[ImageRecord] = []
    for ex in collection.extractors:
        with opened_cache(cfg.cache, *cache_identity(ex, cfg), warn) as cache:  # the query may be cached
            decoded, query_emb, failed = extract_features([query_file], ex, cfg, cache=cache)
        if failed:
            raise InputError(f"cannot use query image {image}: {failed[0].reason}")
        query_embs.append(query_emb)
    n = len(collection.images)
    if n == 0:
        return SimilarResult(query=decoded[0], matches=[], collection=collection)

    thresholds, _ = run_thresholds(collection, config, progress=progress, warn=warn)
    verify = verification_enabled(cfg, collection.extractors)
    images = [*collection.images, decoded[0]]
    embeddings = [emb.concat(q) for emb, q in zip(collection.all_embeddings, query_embs, strict=True)]
    others, at_query = np.arange(n, dtype=np.int64), np.full(n, n, dtype=np.int64)
    if progress:
        progress("index", 0, n)
    sims = np.array([emb.similarity(others, at_query)[0] for emb in embeddings])
    flips = embeddings[0].similarity(others, at_query)[1]
    if progress:
        progress("index", n, n)
    names = [e.name for e in collection.extractors]
    order_th = [thresholds[name] for name in names]
    bar = np.array([t.candidate if verify else t.plain for t in order_th])[:, None]
    proposed = np.flatnonzero((sims >= bar - TOLERANCE).any(axis=0))
    # the most promising candidates are decided; enough to fill k, and every sure pair costs nothing
    proposed = proposed[np.argsort(-promise(sims[:, proposed], order_th), kind="stable")]
    proposed = proposed[: max(2 * k, k + config.index.neighbours)]
    decided: dict[int, PairEvidence] = {}
    if len(proposed):
        workers = max(1, min(4, os.cpu_count() or 1))
        with opened_verify(cfg.cache, warn) as verify_cache:
            verifier = Verifier(
                names=names,
                embeddings=embeddings,
                thresholds=order_th,
                verify=verify,
                store=KeypointStore(images, cfg, cache=verify_cache, workers=workers) if verify else None,
                config=cfg.verify,
                cache=verify_cache,
                workers=workers,
            )
            pairs = np.stack([proposed, np.full(len(proposed), n)], axis=1)
            decided = dict(zip(proposed.tolist(), verifier.evaluate(pairs, progress=progress), strict=True))
    first = sims[0]
    dup = {i for i, ev in decided.items() if ev.edge}
    order = sorted(range(n), key=lambda i: (i not in dup, -first[i], collection.images[i].path))[:k]
    matches = []
    for i in order:
        ev = decided.get(i)
        matches.append(
            Match(
                collection.images[i],
                float(first[i]),
                bool(ev.mirrored if ev is not None else flips[i]),
                duplicate=i in dup,
                evidence=None if ev is None else ev.reason,
                similarities={name: round(float(sims[e, i]), 6) for e, name in enumerate(names)},
            )
        )
    return SimilarResult(
        query=decoded[0], matches=matches, collection=collection, thresholds=thresholds, verified=verify
    )
