"""Orchestration only: paths -> images -> features -> neighbour graph -> groups -> :class:`ScanResult`.

Nothing here prints; progress and warnings go to optional callbacks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from dedup.cluster import Group, dbscan_labels, form_groups
from dedup.config import AUTO, Config
from dedup.errors import ImageError
from dedup.features import Extractor, make_extractors
from dedup.images import ImageFile, ImageRecord, Skipped, discover, open_image, stat_root
from dedup.index import Embeddings, convert, neighbour_graph
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
        seconds: wall time per phase: ``discover``, ``decode_extract``, ``index``, ``cluster`` and, with
            several extractors or verification, ``verify`` (keypoints + matching).
        all_embeddings: each extractor's embeddings by name (``embeddings`` is the first one's).
        thresholds: each extractor's effective thresholds by name.
        verified: whether candidate pairs were checked with keypoints (the verify stage ran).
        verifier: the pair decisions of a run with several extractors or verification (None otherwise).
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
    seconds: dict[str, float] = {}
    for path in paths:  # cheap checks first: a typo in a path must not wait for TensorFlow
        stat_root(path)
    # Weights before the walk: a missing weights file should fail before a long walk over the folders.
    extractors = make_extractors(config.features, warn=warn)
    extractor = extractors[0]
    threshold = effective_threshold(config, extractor)
    eps = float(convert(threshold, "similarity", "cosine"))
    verify = verification_enabled(config, extractors)

    t0 = time.perf_counter()
    if progress:
        progress("discover", 0, None)
    files, skipped = discover(paths, config.discover, exclude=exclude, progress=progress)
    seconds["discover"] = time.perf_counter() - t0
    if progress:
        progress("discover", len(files), len(files))

    t0 = time.perf_counter()
    images, all_embeddings, failed = extract_all(files, extractors, config, progress=progress)
    embeddings = all_embeddings[0]
    seconds["decode_extract"] = time.perf_counter() - t0
    skipped = sorted(skipped + failed, key=lambda s: s.path)
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


_Loaded = tuple[ImageRecord, list[np.ndarray]] | Skipped

# Views of the prepared (square) arrays embedded besides the image itself when features.rotations is on:
# name -> (quarter turns counter-clockwise, mirrored first). "vflip" is the mirror image turned by 180.
ROTATED_VIEWS = (("rot90", 1, False), ("rot180", 2, False), ("rot270", 3, False))
MIRRORED_ROTATED_VIEWS = (("hflip+rot90", 1, True), ("vflip", 2, True), ("hflip+rot270", 3, True))


def view_plan(extractor: Extractor, config: Config, shape: tuple[int, ...]) -> list[tuple[str, int, bool]]:
    """Which rotated views of ``extractor``'s prepared arrays (of ``shape``) are embedded.

    Only weight-free extractors (cheap to run several times) that are not already invariant to orientation,
    with square prepared arrays, and only with ``features.rotations``.
    """
    if not config.features.rotations or not getattr(extractor, "weight_free", False):
        return []
    if getattr(extractor, "orientation_invariant", False) or len(shape) < 2 or shape[0] != shape[1]:
        return []
    return list(ROTATED_VIEWS) + (list(MIRRORED_ROTATED_VIEWS) if config.features.mirror else [])


def extract_features(
    files: Sequence[ImageFile],
    extractor: Extractor,
    config: Config,
    *,
    progress: ProgressFn | None = None,
) -> tuple[list[ImageRecord], Embeddings, list[Skipped]]:
    """Decode ``files`` in worker threads and embed them in batches with one extractor.

    See :func:`extract_all` (this is its one-extractor case).

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded, their vectors (float32, shape
        (len(images), extractor.dim)), and the files that could not be decoded.
    """
    images, embeddings, skipped = extract_all(files, [extractor], config, progress=progress)
    return images, embeddings[0], skipped


def extract_all(
    files: Sequence[ImageFile],
    extractors: Sequence[Extractor],
    config: Config,
    *,
    progress: ProgressFn | None = None,
) -> tuple[list[ImageRecord], list[Embeddings], list[Skipped]]:
    """Decode ``files`` in worker threads (once) and embed them in batches with every extractor.

    Decoding of the next batch overlaps with the models running on the current one; at most two batches
    are in memory at a time. With ``features.mirror`` each batch is embedded a second time mirrored
    (prepared arrays are (height, width[, channels]), so the mirror image is a flip of axis 2 of the batch);
    with ``features.rotations`` weight-free extractors also embed the rotated views of :func:`view_plan`.

    Returns:
        ``(images, embeddings, skipped)``: the images that decoded, one :class:`Embeddings` per extractor
        (float32 rows aligned with ``images``), and the files that could not be decoded.
    """
    images: list[ImageRecord] = []
    chunks: list[list[np.ndarray]] = [[] for _ in extractors]
    mirror_chunks: list[list[np.ndarray]] = [[] for _ in extractors]
    view_chunks: list[dict[str, list[np.ndarray]]] = [{} for _ in extractors]
    skipped: list[Skipped] = []
    done = 0
    if progress:
        progress("extract", 0, len(files))
    for batch in _decoded_batches(files, extractors, config):
        ok = [item for item in batch if not isinstance(item, Skipped)]
        skipped.extend(item for item in batch if isinstance(item, Skipped))
        if ok:
            for e, extractor in enumerate(extractors):
                stacked = np.stack([arrays[e] for _, arrays in ok])
                chunks[e].append(extractor.embed(stacked))
                if config.features.mirror:
                    mirror_chunks[e].append(extractor.embed(np.ascontiguousarray(np.flip(stacked, axis=2))))
                for name, turns, flip in view_plan(extractor, config, stacked.shape[1:]):
                    x = np.flip(stacked, axis=2) if flip else stacked
                    rotated = np.ascontiguousarray(np.rot90(x, turns, axes=(1, 2)))
                    view_chunks[e].setdefault(name, []).append(extractor.embed(rotated))
            images.extend(rec for rec, _ in ok)
        done += len(batch)
        if progress:
            progress("extract", done, len(files))

    def stack(parts: list[np.ndarray], dim: int) -> np.ndarray:
        out = np.concatenate(parts) if parts else np.empty((0, dim), dtype=np.float32)
        return out.astype(np.float32, copy=False)

    out = []
    for e, extractor in enumerate(extractors):
        mirrored = stack(mirror_chunks[e], extractor.dim) if config.features.mirror else None
        views = tuple((name, stack(parts, extractor.dim)) for name, parts in view_chunks[e].items())
        out.append(Embeddings(stack(chunks[e], extractor.dim), mirrored, views))
    return images, out, skipped


def _decoded_batches(
    files: Sequence[ImageFile], extractors: Sequence[Extractor], config: Config
) -> Iterator[list[_Loaded]]:
    """Yield batches of decoded images prepared for each extractor, decoding the next batch in the
    background."""
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

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dedup-decode") as pool:
        pending: list[list[Future[_Loaded]]] = []
        for start in range(0, len(files), size):
            pending.append([pool.submit(load, f) for f in files[start : start + size]])
            if len(pending) == 2:
                yield [fut.result() for fut in pending.pop(0)]
        for futures in pending:
            yield [fut.result() for fut in futures]
