"""Choosing the similarity threshold: sweep it over features extracted once (``dedup tune``).

Why a module of its own: a sweep is an analysis *across* the stages (index, cluster) rather than a stage,
and it needs pieces of several of them at once; ``cluster.py`` stays about forming one grouping.

For each threshold the grouping is exactly what ``find_duplicates`` would report: the Annoy forest is
queried once (:func:`dedup.index.candidate_pairs`, the same candidates ``neighbour_graph`` uses), the
graph of the loosest threshold is built once, and every stricter threshold keeps the edges within its own
``eps`` before DBSCAN and the chaining guard (:func:`dedup.cluster.form_groups`) run again. Features are
never extracted twice.

Measures per threshold:

* ``groups``, ``duplicates`` (images that could go), ``grouped`` (images in some group), ``chain_splits``.
* ``silhouette`` (cosine), ``davies_bouldin`` and ``calinski_harabasz`` (Euclidean, which on unit vectors
  orders pairs like cosine distance) from ``sklearn.metrics``, computed on the **grouped images only**:
  images in no group are DBSCAN noise, not a cluster, and would dominate every score. A member that matches
  its kept image as a mirror image contributes its mirrored vector, so flipped copies sit with their group.
  Above :data:`SCORE_SAMPLE` grouped images a fixed random subsample (seed 0) is scored. A score is
  ``None`` when undefined: fewer than 2 groups (in the subsample).

The **k-distance curve** is the usual way to pick DBSCAN's ``eps``: each image's cosine distance to its
k-th nearest neighbour, ``k = min_samples - 1`` (neighbours other than itself, from the same Annoy
candidates, exact distances), sorted ascending. Its **elbow** is found with the Kneedle idea (Satopää et
al., 2011): both axes scaled to [0, 1], the point furthest below the chord from the first to the last
point (for an increasing convex curve, the largest ``x - y``). Duplicates have close neighbours and sit
left of the elbow; distinct images sit right of it.

**Suggested threshold.** When some grouping stays exactly the same over at least :data:`MIN_PLATEAU`
consecutive thresholds (and has at least one group), the middle of the widest such range is suggested:
the result then does not hinge on the exact value. Otherwise the elbow of the k-distance curve is used,
as the largest swept threshold whose ``eps`` reaches the elbow distance. With no groups at any threshold
the extractor's default is kept. A data set in which every image has a duplicate has no elbow in the
k-distance curve (every nearest neighbour is close), which is why the plateau rule comes first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from dedup.cache import VerifyCache, opened_verify
from dedup.cluster import Group, dbscan_labels, form_groups
from dedup.config import Config
from dedup.embeddings import TOLERANCE, Embeddings, convert, to_distance, to_similarity
from dedup.errors import InputError
from dedup.extract import FeatureSet, collect_features
from dedup.index import candidate_pairs, graph_from_pairs
from dedup.partition import knee
from dedup.verify import KeypointStore, verification_enabled

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]

SCORE_SAMPLE = 2000  # grouped images scored at most per threshold (silhouette is O(n^2))
MIN_PLATEAU = 3  # consecutive thresholds with an identical grouping needed to prefer the plateau rule
# Default sweeps, by extractor: (lowest, highest, step) in cosine similarity. VGG16's ReLU features are all
# non-negative, so unrelated photos already reach 0.5-0.7 and lower thresholds would only chain them.
DEFAULT_RANGES: dict[str, tuple[float, float, float]] = {
    "vgg16": (0.70, 0.99, 0.01),
    "phash": (0.50, 0.96, 0.02),
}
FALLBACK_RANGE = (0.50, 0.98, 0.02)
# With verification the sweep is of verify.sure_threshold (every extractor's): below it pairs need keypoints.
VERIFIED_RANGE = (0.80, 1.00, 0.01)


@dataclass(frozen=True)
class ThresholdScores:
    """The grouping at one threshold.

    Attributes:
        threshold: cosine similarity.
        groups: duplicate groups.
        duplicates: images that could go (every member but the kept one).
        grouped: images in some group.
        chain_splits: images moved out of a DBSCAN cluster by the chaining guard.
        silhouette, davies_bouldin, calinski_harabasz: scores of the grouping on the grouped images
            (``None`` when undefined, see the module docstring).
        scored: grouped images the scores were computed on (after subsampling).
        precision, recall, f1: pairwise scores against ``--truth`` (None without a truth CSV).
    """

    threshold: float
    groups: int
    duplicates: int
    grouped: int
    chain_splits: int
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
    scored: int
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


@dataclass
class TuneResult:
    """Everything ``dedup tune`` shows; :meth:`to_dict` is JSON-ready.

    Attributes:
        rows: one :class:`ThresholdScores` per swept threshold, ascending.
        k: the neighbour rank of the k-distance curve (``min_samples - 1``).
        k_distance: float64 array, each image's cosine distance to its k-th nearest neighbour, sorted
            ascending (images without k neighbours left out).
        elbow_index: position of the elbow in ``k_distance``, or None (fewer than 3 points, a flat or
            concave curve).
        elbow_threshold: ``1 - k_distance[elbow_index]`` (cosine similarity), or None.
        suggested: the suggested threshold (one of the swept ones, or the extractor default).
        rule: ``"plateau"``, ``"elbow"`` or ``"default"``: which rule chose ``suggested``.
        reason: one or two sentences saying why.
        images: images in the sweep.
        extractor: ``info()`` of the extractor that ran.
        default_threshold: the extractor's default threshold.
        plateau: ``(lowest, highest)`` threshold of the chosen plateau, or None.
        key: the configuration key the swept threshold is (``cluster.threshold``, or with verification
            ``verify.sure_threshold``): setting it to a row's threshold gives that row's scan.
        verified: whether the sweep ran the verify stage.
    """

    rows: list[ThresholdScores]
    k: int
    k_distance: np.ndarray
    elbow_index: int | None
    elbow_threshold: float | None
    suggested: float
    rule: str
    reason: str
    images: int
    extractor: dict[str, Any] = field(default_factory=dict)
    default_threshold: float = 0.0
    plateau: tuple[float, float] | None = None
    key: str = "cluster.threshold"
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "verified": self.verified,
            "images": self.images,
            "extractor": self.extractor,
            "default_threshold": self.default_threshold,
            "suggested": self.suggested,
            "rule": self.rule,
            "reason": self.reason,
            "plateau": list(self.plateau) if self.plateau else None,
            "k": self.k,
            "elbow": None
            if self.elbow_index is None
            else {
                "index": self.elbow_index,
                "distance": float(self.k_distance[self.elbow_index]),
                "threshold": self.elbow_threshold,
            },
            "k_distance": [round(float(d), 6) for d in self.k_distance],
            "thresholds": [vars(row) for row in self.rows],
        }


#: Most thresholds one sweep tries (step 0.002 over the whole range -1..1).
MAX_THRESHOLDS = 1001


def threshold_range(lowest: float, highest: float, step: float) -> list[float]:
    """Thresholds from ``lowest`` to ``highest`` (inclusive, within rounding) every ``step``.

    Raises:
        InputError: values outside [-1, 1], ``lowest > highest``, ``step <= 0`` (or not a number), or more
            than :data:`MAX_THRESHOLDS` thresholds (every one costs a clustering of the whole graph).
    """
    if not math.isfinite(step):
        raise InputError(f"threshold step must be a number, got {step}")
    if not (-1.0 <= lowest <= 1.0 and -1.0 <= highest <= 1.0):
        raise InputError(f"thresholds must lie in -1..1, got {lowest} to {highest}")
    if lowest > highest:
        raise InputError(f"lowest threshold {lowest} is above the highest {highest}")
    if step <= 0:
        raise InputError(f"threshold step must be positive, got {step}")
    count = int(np.floor((highest - lowest) / step + 1e-9)) + 1
    if count > MAX_THRESHOLDS:
        raise InputError(
            f"threshold step {step:g} from {lowest:g} to {highest:g} gives {count:,} thresholds; at most "
            f"{MAX_THRESHOLDS:,} (use a larger --step or a narrower --min/--max)"
        )
    return sorted({round(lowest + i * step, 6) for i in range(count)})


def default_thresholds(
    extractor: str, lowest: float | None = None, highest: float | None = None, step: float | None = None
) -> list[float]:
    """The sweep of an extractor: :data:`DEFAULT_RANGES`, with any of its ends or step replaced."""
    lo, hi, st = DEFAULT_RANGES.get(extractor, FALLBACK_RANGE)
    return threshold_range(
        lo if lowest is None else lowest, hi if highest is None else highest, st if step is None else step
    )


def k_distances(embeddings: Embeddings, rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """Each image's exact cosine distance to its ``k``-th nearest candidate neighbour, sorted ascending.

    Args:
        embeddings: the images' vectors (mirror-aware similarity, as everywhere).
        rows, cols: candidate pairs from :func:`dedup.index.candidate_pairs` (``cols`` are ``rows``'
            candidate neighbours).
        k: neighbour rank, >= 1.

    Returns:
        float64 array of shape (n_images_with_k_candidates,), ascending.
    """
    n = len(embeddings)
    if n < 2 or len(rows) == 0:
        return np.empty(0, dtype=np.float64)
    keys = np.unique(rows * n + cols)
    r, c = keys // n, keys % n
    sim, _ = embeddings.similarity(r, c)
    dist = np.asarray(to_distance(sim), dtype=np.float64)
    order = np.lexsort((dist, r))
    r, dist = r[order], dist[order]
    starts = np.searchsorted(r, np.arange(n), side="left")
    counts = np.searchsorted(r, np.arange(n), side="right") - starts
    have = counts >= k
    return np.sort(dist[starts[have] + k - 1])


def _scores(
    groups: Sequence[Group], embeddings: Embeddings, rng_seed: int = 0
) -> tuple[float | None, float | None, float | None, int]:
    """Silhouette (cosine), Davies-Bouldin, Calinski-Harabasz of ``groups`` on their members only."""
    from sklearn import metrics as skm

    members = [m for g in groups for m in g.members]
    if len(groups) < 2:
        return None, None, None, len(members)
    labels = np.concatenate([np.full(len(g.members), k) for k, g in enumerate(groups)])
    flipped = np.array([f for g in groups for f in g.mirrored], dtype=bool)
    index = np.asarray(members, dtype=np.int64)
    if len(index) > SCORE_SAMPLE:
        pick = np.sort(np.random.default_rng(rng_seed).choice(len(index), SCORE_SAMPLE, replace=False))
        index, labels, flipped = index[pick], labels[pick], flipped[pick]
    x = embeddings.vectors[index].astype(np.float64)
    if embeddings.mirrored is not None and flipped.any():
        x[flipped] = embeddings.mirrored[index[flipped]]
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return None, None, None, len(index)
    return (
        float(skm.silhouette_score(x, labels, metric="cosine")),
        float(skm.davies_bouldin_score(x, labels)),
        float(skm.calinski_harabasz_score(x, labels)),
        len(index),
    )


def _restrict(graph: sp.csr_matrix, eps: float) -> sp.csr_matrix:
    """The edges of ``graph`` within ``eps`` (explicit zero distances kept)."""
    coo = graph.tocoo()
    keep = coo.data <= eps + TOLERANCE
    return sp.coo_matrix(
        (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=graph.shape, dtype=np.float64
    ).tocsr()


def _signature(groups: Sequence[Group]) -> frozenset[tuple[int, ...]]:
    return frozenset(tuple(sorted(g.members)) for g in groups)


def sweep(
    collection: FeatureSet,
    thresholds: Sequence[float] | None = None,
    *,
    lowest: float | None = None,
    highest: float | None = None,
    step: float | None = None,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Group ``collection`` at every threshold, score each grouping and suggest a threshold.

    Args:
        collection: images and features from :func:`dedup.pipeline.collect_features`.
        thresholds: cosine similarities to try (sorted and de-duplicated here); default
            :func:`default_thresholds` of the extractor that ran, with ``lowest``, ``highest`` and
            ``step`` replacing its range where given.
        progress: optional callback ``(phase, done, total)``; phases ``index``, ``tune``.

    Returns:
        A :class:`TuneResult`.

    Raises:
        InputError: an empty list of thresholds.
    """
    config: Config = collection.config
    extractor = collection.extractor
    if thresholds is None:
        thresholds = default_thresholds(extractor.name, lowest, highest, step)
    ts = sorted({round(float(t), 6) for t in thresholds})
    if not ts:
        raise InputError("no thresholds to try")
    embeddings, images = collection.embeddings, collection.images
    ix = config.index
    rows, cols = candidate_pairs(
        embeddings, k=ix.neighbours, n_trees=ix.n_trees, search_k=ix.search_k, seed=ix.seed, progress=progress
    )
    loosest = graph_from_pairs(embeddings, rows, cols, float(convert(ts[0], "similarity", "cosine")))
    k = config.cluster.min_samples - 1
    kd = k_distances(embeddings, rows, cols, k)
    at = knee(np.arange(len(kd)), kd)
    elbow_threshold = None if at is None else round(float(to_similarity(kd[at])), 6)

    results: list[ThresholdScores] = []
    signatures: list[frozenset[tuple[int, ...]]] = []
    for done, t in enumerate(ts, start=1):
        eps = float(convert(t, "similarity", "cosine"))
        graph = _restrict(loosest, eps)
        labels = dbscan_labels(graph, eps=eps, min_samples=config.cluster.min_samples)
        groups, splits = form_groups(
            labels, embeddings, graph, images, threshold=t, policy=config.keep.policy
        )
        results.append(_row(t, groups, splits, embeddings))
        signatures.append(_signature(groups))
        if progress:
            progress("tune", done, len(ts))

    suggested, rule, reason, plateau = _suggest(results, signatures, kd, at, extractor.default_threshold)
    return TuneResult(
        rows=results,
        k=k,
        k_distance=kd,
        elbow_index=at,
        elbow_threshold=elbow_threshold,
        suggested=suggested,
        rule=rule,
        reason=reason,
        images=len(images),
        extractor=extractor.info(),
        default_threshold=extractor.default_threshold,
        plateau=plateau,
    )


def _suggest(
    rows: Sequence[ThresholdScores],
    signatures: Sequence[frozenset[tuple[int, ...]]],
    kd: np.ndarray,
    at: int | None,
    default: float,
) -> tuple[float, str, str, tuple[float, float] | None]:
    """``(threshold, rule, reason, plateau)``; see the module docstring for the rules."""
    elbow_t = None if at is None else float(to_similarity(kd[at]))
    runs: list[tuple[int, int]] = []  # [start, stop) of consecutive rows with one grouping and >= 1 group
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or signatures[i] != signatures[start]:
            if rows[start].groups > 0:
                runs.append((start, i))
            start = i
    ts = [r.threshold for r in rows]

    def width(run: tuple[int, int]) -> float:
        return ts[run[1] - 1] - ts[run[0]]

    def closeness(run: tuple[int, int]) -> float:  # tie-break: nearest the elbow, else the stricter one
        mid = (ts[run[0]] + ts[run[1] - 1]) / 2
        return -abs(mid - elbow_t) if elbow_t is not None else mid

    long_runs = [run for run in runs if run[1] - run[0] >= MIN_PLATEAU]
    if long_runs:
        best = max(long_runs, key=lambda run: (round(width(run), 6), closeness(run)))
        lo, hi = ts[best[0]], ts[best[1] - 1]
        mid = best[0] + (best[1] - 1 - best[0]) // 2
        row = rows[mid]
        reason = (
            f"From {lo:.3f} to {hi:.3f} the grouping stays exactly the same ({row.groups} groups, "
            f"{row.duplicates} duplicate images), so it does not hinge on the exact value; "
            f"{row.threshold:.3f} is the middle of that range."
        )
        if elbow_t is not None:
            reason += f" The k-distance elbow alone would give {elbow_t:.3f}."
        return row.threshold, "plateau", reason, (lo, hi)
    if elbow_t is not None and any(r.groups > 0 for r in rows):
        reachable = [t for t in ts if t <= elbow_t + TOLERANCE]
        chosen = max(reachable) if reachable else ts[0]
        reason = (
            f"The k-distance curve bends at cosine distance {float(kd[at or 0]):.3f}: images left of the "
            f"bend have a close neighbour (duplicates), those right of it do not; {chosen:.3f} is the "
            "strictest swept threshold that still reaches the bend."
        )
        return chosen, "elbow", reason, None
    return (
        default,
        "default",
        f"No threshold in the sweep gives a clear answer (no stable grouping and no elbow with duplicates); "
        f"keeping the extractor's default {default:.3f}.",
        None,
    )


def tune(
    paths: Sequence[str | Path],
    config: Config | None = None,
    thresholds: Sequence[float] | None = None,
    *,
    lowest: float | None = None,
    highest: float | None = None,
    step: float | None = None,
    truth: str | Path | None = None,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> TuneResult:
    """Extract the features under ``paths`` once (:func:`dedup.pipeline.collect_features`, every configured
    extractor) and sweep the threshold the scan would use over them: with verification (the default
    combination) :func:`sweep_verified` of ``verify.sure_threshold``, else :func:`sweep` of
    ``cluster.threshold`` (the first extractor's). With ``truth`` (a ground-truth CSV, as for ``dedup
    evaluate``) each row also gets its pairwise precision, recall and F1. Reads files, never modifies
    anything but the caches.

    Raises:
        InputError: a path does not exist, a bad threshold range (checked before any extraction), or an
            unreadable truth CSV.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    # a bad range must fail before the long extraction (ends not given are the extractor's, known later)
    ranges = [*DEFAULT_RANGES.values(), FALLBACK_RANGE, VERIFIED_RANGE]
    threshold_range(
        min(r[0] for r in ranges) if lowest is None else lowest,
        max(r[1] for r in ranges) if highest is None else highest,
        1.0 if step is None else step,
    )
    truth_of = _truth_labels(truth) if truth is not None else None
    collection = collect_features(paths, config, progress=progress, warn=warn)
    if verification_enabled(collection.config, collection.extractors):
        return sweep_verified(
            collection,
            config or Config(),
            thresholds,
            lowest=lowest,
            highest=highest,
            step=step,
            truth=truth_of,
            progress=progress,
            warn=warn,
        )
    first = replace(
        collection,
        extractors=collection.extractors[:1],
        all_embeddings=collection.all_embeddings[:1],
    )
    result = sweep(first, thresholds, lowest=lowest, highest=highest, step=step, progress=progress)
    if truth_of is not None:
        result = _with_truth(result, first, truth_of)
    return result


def _truth_labels(truth: str | Path) -> dict[str, str]:
    """path -> group id of a truth CSV (rows of the CORRUPT group left out)."""
    from dedup.metrics import load_truth

    return {row.path: row.group_id for row in load_truth(truth).rows if row.group_id != "CORRUPT"}


def _truth_scores(
    groups: Sequence[Group], images: Sequence[Any], truth: dict[str, str]
) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 of ``groups`` over the scanned images the truth names."""
    from dedup.metrics import pairwise_scores

    scored = [i for i, im in enumerate(images) if os.path.normpath(im.path) in truth]
    pred = {i: f"u{i}" for i in scored}
    for g, group in enumerate(groups):
        for m in group.members:
            if m in pred:
                pred[m] = f"g{g}"
    s = pairwise_scores([truth[os.path.normpath(images[i].path)] for i in scored], [pred[i] for i in scored])
    return (
        round(float(s["precision"]), 4),
        round(float(s["recall"]), 4),
        round(float(s["f1"]), 4),
    )


def _with_truth(result: TuneResult, collection: FeatureSet, truth: dict[str, str]) -> TuneResult:
    """``result`` with each row's truth scores (the plain sweep's groupings, formed again per row)."""
    embeddings, images, config = collection.embeddings, collection.images, collection.config
    ix = config.index
    rows_, cols = candidate_pairs(
        embeddings, k=ix.neighbours, n_trees=ix.n_trees, search_k=ix.search_k, seed=ix.seed
    )
    loosest = graph_from_pairs(
        embeddings, rows_, cols, float(convert(result.rows[0].threshold, "similarity", "cosine"))
    )
    rows = []
    for row in result.rows:
        eps = float(convert(row.threshold, "similarity", "cosine"))
        graph = _restrict(loosest, eps)
        labels = dbscan_labels(graph, eps=eps, min_samples=config.cluster.min_samples)
        groups, _ = form_groups(
            labels, embeddings, graph, images, threshold=row.threshold, policy=config.keep.policy
        )
        p, r, f = _truth_scores(groups, images, truth)
        rows.append(replace(row, precision=p, recall=r, f1=f))
    return replace(result, rows=rows)


def _row(
    t: float,
    groups: list[Group],
    splits: int,
    embeddings: Embeddings,
    precision: float | None = None,
    recall: float | None = None,
    f1: float | None = None,
) -> ThresholdScores:
    """The sweep's row for threshold ``t``: group counts, internal scores and (with a truth) P/R/F1."""
    silhouette, davies_bouldin, calinski_harabasz, scored = _scores(groups, embeddings)
    return ThresholdScores(
        threshold=t,
        groups=len(groups),
        duplicates=sum(len(g.members) - 1 for g in groups),
        grouped=sum(len(g.members) for g in groups),
        chain_splits=splits,
        silhouette=silhouette,
        davies_bouldin=davies_bouldin,
        calinski_harabasz=calinski_harabasz,
        scored=scored,
        precision=precision,
        recall=recall,
        f1=f1,
    )


class _MemoryDecisions:
    """The verify cache's candidate, pair-decision and facts methods, in memory: the sweep decides one
    collection at every threshold, and a pair checked once is not checked again (keypoints stay in the
    shared :class:`~dedup.verify.KeypointStore`)."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str, str], str] = {}
        self.candidates: dict[str, np.ndarray] = {}
        self.facts: dict[tuple[str, str], str] = {}

    def get_decisions(self, params: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {p: self.decisions[(params, *p)] for p in pairs if (params, *p) in self.decisions}

    def put_decision(self, params: str, a: str, b: str, text: str) -> None:
        self.decisions[(params, a, b)] = text

    def get_candidates(self, key: str) -> np.ndarray | None:
        return self.candidates.get(key)

    def put_candidates(self, key: str, found: np.ndarray) -> None:
        self.candidates[key] = found

    def get_facts(self, params: str, files: Sequence[tuple[str, int, float]]) -> dict[str, str]:
        return {path: self.facts[(params, path)] for path, _, _ in files if (params, path) in self.facts}

    def put_facts(self, params: str, rows: Sequence[tuple[str, int, float, str]]) -> None:
        self.facts.update(((params, path), value) for path, _, _, value in rows)

    def get_keypoints(self, *args: Any) -> None:
        return None

    def put_keypoints(self, *args: Any) -> None:
        return None


def sweep_verified(
    collection: FeatureSet,
    config: Config,
    thresholds: Sequence[float] | None = None,
    *,
    lowest: float | None = None,
    highest: float | None = None,
    step: float | None = None,
    truth: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> TuneResult:
    """The scan's own grouping (:func:`dedup.pipeline.decide_groups`: every extractor's candidates, the
    verify stage, DBSCAN, the chaining guard) at every ``verify.sure_threshold`` in the sweep; a row is
    exactly what ``dedup scan`` reports with that value set. Pair checks are done once for the whole sweep
    (the verify cache, or memory when the cache is off). Scores, k-distance curve and suggestion as in
    :func:`sweep`, on the first extractor's vectors.
    """
    from dedup.pipeline import decide_groups, run_thresholds

    lo, hi, st = VERIFIED_RANGE
    if thresholds is None:
        thresholds = threshold_range(
            lo if lowest is None else lowest, hi if highest is None else highest, st if step is None else step
        )
    ts = sorted({round(float(t), 6) for t in thresholds})
    if not ts:
        raise InputError("no thresholds to try")
    base_cfg = collection.config
    images, embeddings = collection.images, collection.embeddings
    extractor = collection.extractor
    base, calibrations = run_thresholds(collection, base_cfg, warn=warn)  # calibrated once
    current = base[extractor.name].sure
    ix = base_cfg.index
    rows_, cols = candidate_pairs(
        embeddings, k=ix.neighbours, n_trees=ix.n_trees, search_k=ix.search_k, seed=ix.seed, progress=progress
    )
    k = base_cfg.cluster.min_samples - 1
    kd = k_distances(embeddings, rows_, cols, k)
    at = knee(np.arange(len(kd)), kd)
    elbow_threshold = None if at is None else round(float(to_similarity(kd[at])), 6)
    results: list[ThresholdScores] = []
    signatures: list[frozenset[tuple[int, ...]]] = []
    with opened_verify(base_cfg.cache, warn) as persistent:
        cache = persistent if persistent is not None else cast(VerifyCache, _MemoryDecisions())
        store = KeypointStore(images, base_cfg, cache=persistent)
        for done, t in enumerate(ts, start=1):
            cfg = replace(base_cfg, verify=replace(base_cfg.verify, sure_threshold=t))
            ths = {name: replace(th, sure=t) for name, th in base.items()}  # as verify.sure_threshold: t
            _, groups, splits, _ = decide_groups(
                list(images),
                collection.extractors,
                collection.all_embeddings,
                ths,
                cfg,
                True,
                {},
                progress=None,
                cache=cache,
                store=store,
            )
            scores = _truth_scores(groups, images, truth) if truth is not None else (None, None, None)
            results.append(_row(t, groups, splits, embeddings, *scores))
            signatures.append(_signature(groups))
            if progress:
                progress("tune", done, len(ts))
    suggested, rule, reason, plateau = _suggest(results, signatures, kd, at, min(current, 1.0))
    info = (
        extractor.info()
        if len(collection.extractors) == 1
        else {
            "name": "+".join(e.name for e in collection.extractors),
            "extractors": [e.info() for e in collection.extractors],
        }
    )
    if calibrations:
        info = {**info, "calibrated": {name: c.to_dict() for name, c in calibrations.items()}}
    return TuneResult(
        rows=results,
        k=k,
        k_distance=kd,
        elbow_index=at,
        elbow_threshold=elbow_threshold,
        suggested=suggested,
        rule=rule,
        reason=reason,
        images=len(images),
        extractor=info,
        default_threshold=min(current, 1.0),
        plateau=plateau,
        key="verify.sure_threshold",
        verified=True,
    )


def plot_panels(result: TuneResult) -> list[Any]:
    """The three charts of ``dedup tune --plot`` as :class:`dedup.plot.Panel` s: groups and duplicates per
    threshold, the k-distance curve with its elbow, and the cluster-quality scores per threshold."""
    from dedup.plot import PALETTE, Marker, Panel, Series

    ts = [r.threshold for r in result.rows]
    suggested = Marker(result.suggested, f"suggested {result.suggested:.3f}", PALETTE[3])
    default = Marker(
        result.default_threshold, f"default {result.default_threshold:.3f}", PALETTE[5], dashed=True
    )
    markers = [suggested] + ([default] if default.x != suggested.x else [])
    ch = [r.calinski_harabasz for r in result.rows]
    ch_max = max((c for c in ch if c is not None), default=None)
    panels = [
        Panel(
            "Groups and duplicate images per threshold",
            "threshold (cosine similarity)",
            [
                Series("groups", ts, [float(r.groups) for r in result.rows], PALETTE[0]),
                Series("duplicate images", ts, [float(r.duplicates) for r in result.rows], PALETTE[1]),
            ],
            markers,
        ),
    ]
    kd = result.k_distance
    k_markers = []
    if result.elbow_index is not None:
        k_markers.append(
            Marker(
                float(result.elbow_index),
                f"elbow {kd[result.elbow_index]:.3f}",
                PALETTE[4],
                y=float(kd[result.elbow_index]),
            )
        )
    panels.append(
        Panel(
            f"k-distance curve (k = {result.k}), sorted",
            "images, by distance to their k-th nearest neighbour",
            [Series("cosine distance", list(range(len(kd))), [float(d) for d in kd], PALETTE[0])],
            k_markers,
        )
    )
    panels.append(
        Panel(
            "Quality of the grouping (grouped images only)",
            "threshold (cosine similarity)",
            [
                Series("silhouette", ts, [r.silhouette for r in result.rows], PALETTE[0]),
                Series("Davies-Bouldin", ts, [r.davies_bouldin for r in result.rows], PALETTE[1]),
                Series(
                    "Calinski-H. / max",
                    ts,
                    [None if c is None or not ch_max else c / ch_max for c in ch],
                    PALETTE[2],
                ),
            ],
            markers,
        )
    )
    if any(r.precision is not None for r in result.rows):
        panels.append(
            Panel(
                "Precision and recall against the truth (pairwise)",
                f"threshold ({result.key})",
                [
                    Series("precision", ts, [r.precision for r in result.rows], PALETTE[0]),
                    Series("recall", ts, [r.recall for r in result.rows], PALETTE[1]),
                    Series("F1", ts, [r.f1 for r in result.rows], PALETTE[2]),
                ],
                markers,
            )
        )
    return panels
