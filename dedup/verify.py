"""Geometric verification of candidate pairs with local features (SIFT keypoints, ratio test, RANSAC).

Global descriptors propose candidate pairs; this stage decides which of them are duplicates. For each pair
the SIFT descriptors of both images are matched (Lowe's ratio test, one-to-one), and RANSAC looks for a
similarity transform (rotation, uniform scale, translation) consistent with as many matches as possible.
Two photos of one scene under crops, letterboxing, rotation, resizing, overlays or colour edits share many
such *inliers*; two photos of different objects on the same background share few, because the background
alone seldom survives the ratio test and the one-to-one rule with a plausible scale. The mirror image of the
second image is tried too, so horizontal (and, SIFT being rotation-invariant, vertical) flips are found.

Keypoints are computed once per image and per direction (as is / mirrored), on demand, only for images that
appear in a pair, in worker threads (OpenCV releases the GIL), on a grayscale copy whose longest side is
``verify.image_size``. They are kept in a :class:`KeypointCache`; the default one lives in memory for one
run, and a persistent cache can be plugged in through the same two methods (``get``/``put``) keyed by
:func:`keypoint_key`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from PIL import Image

from dedup.config import AUTO, Config, VerifyConfig
from dedup.embeddings import TOLERANCE, Embeddings, to_distance
from dedup.errors import DedupError, ImageError
from dedup.images import open_image
from dedup.keep import HasImageFacts

ProgressFn = Callable[[str, int, "int | None"], None]

# Bump when keypoint computation changes in a way that changes the keypoints (cache identity).
KEYPOINT_PREPROCESSING = "sift/gray-lanczos-longest-side/v1"

# Transforms whose scale is outside this range are not a duplicate's (and RANSAC degenerates there, e.g.
# when many keypoints of one image match a single point of the other).
MIN_SCALE, MAX_SCALE = 0.2, 5.0


@dataclass(frozen=True)
class Keypoints:
    """SIFT keypoints of one image.

    Attributes:
        points: float32 array of shape (k, 2): x, y in pixels of the image keypoints were computed on.
        descriptors: float32 array of shape (k, 128).
        size: (width, height) of the image keypoints were computed on.
    """

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.points)


class KeypointCache(Protocol):
    """Where keypoints are kept between uses (in memory by default; a persistent cache can plug in)."""

    def get(self, key: str) -> Keypoints | None: ...
    def put(self, key: str, value: Keypoints) -> None: ...


class MemoryKeypointCache:
    """A thread-safe in-memory :class:`KeypointCache` for one run."""

    def __init__(self) -> None:
        self._data: dict[str, Keypoints] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Keypoints | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: Keypoints) -> None:
        with self._lock:
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data)


def keypoint_key(image: HasImageFacts, cfg: VerifyConfig, mirrored: bool) -> str:
    """Identity of an image's keypoints: the file (path, size, mtime) and every parameter that shapes them."""
    return (
        f"{image.path}\0{image.size}\0{image.mtime!r}\0{KEYPOINT_PREPROCESSING}\0"
        f"{cfg.image_size}\0{cfg.max_keypoints}\0{int(mirrored)}"
    )


def keypoint_image(image: Image.Image, side: int) -> np.ndarray:
    """Grayscale uint8 array whose longest side is ``side`` pixels (smaller images are enlarged too, so
    a thumbnail and its original show their details at comparable scales)."""
    gray = image.convert("L")
    w, h = gray.size
    scale = side / max(w, h)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = gray.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def detect(gray: np.ndarray, max_keypoints: int) -> Keypoints:
    """SIFT keypoints and descriptors of a grayscale uint8 image (at most ``max_keypoints``, strongest)."""
    import cv2

    sift = cv2.SIFT.create(nfeatures=max_keypoints)
    try:
        kps, desc = sift.detectAndCompute(np.ascontiguousarray(gray), None)
    except cv2.error as e:
        raise DedupError(f"OpenCV SIFT failed: {e}") from e
    size = (int(gray.shape[1]), int(gray.shape[0]))
    if desc is None or not kps:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), size)
    points = np.array([kp.pt for kp in kps], dtype=np.float32)
    return Keypoints(points, np.asarray(desc, dtype=np.float32), size)


@dataclass(frozen=True)
class Match:
    """Result of matching two images' keypoints.

    Attributes:
        inliers: matches consistent with the RANSAC transform (0 when none was found or it is implausible).
        matches: matches that passed the ratio test and the one-to-one rule.
        transform: 2x3 similarity transform from the first image to the second, or None.
        overlap: keypoints of the image with fewer of them that fall inside the other image once mapped
            by ``transform`` (the keypoints that *could* have matched); 0 without a transform.
    """

    inliers: int
    matches: int
    transform: np.ndarray | None = None
    overlap: int = 0

    @property
    def coverage(self) -> float:
        """``inliers / overlap``: the share of the keypoints two images have in common that agree."""
        return self.inliers / self.overlap if self.overlap else 0.0


def _inside(points: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> int:
    """How many ``points`` mapped by the 2x3 ``transform`` land inside an image of ``size``."""
    mapped = points @ transform[:, :2].T + transform[:, 2]
    w, h = size
    return int(
        np.count_nonzero((mapped[:, 0] >= 0) & (mapped[:, 0] < w) & (mapped[:, 1] >= 0) & (mapped[:, 1] < h))
    )


def count_inliers(a: Keypoints, b: Keypoints, *, ratio: float = 0.75, ransac_threshold: float = 4.0) -> Match:
    """Match ``a`` to ``b`` and count the matches consistent with one similarity transform.

    Matches are nearest neighbours (L2) that pass Lowe's ratio test (``best < ratio * second best``); each
    keypoint of ``b`` and each location keeps only its best match (one-to-one). RANSAC
    (``cv2.estimateAffinePartial2D``) then fits rotation + uniform scale + translation; a transform whose
    scale is outside [0.2, 5] counts as no match.

    Args:
        a, b: keypoints of two images.
        ratio: ratio-test value.
        ransac_threshold: maximum reprojection error in pixels for an inlier.
    """
    import cv2

    if len(a) < 2 or len(b) < 2:
        return Match(0, 0)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if len(good) < 3:
        return Match(0, len(good))
    q = np.array([m.queryIdx for m in good], dtype=np.int64)
    t = np.array([m.trainIdx for m in good], dtype=np.int64)
    d = np.array([m.distance for m in good], dtype=np.float64)
    order = np.argsort(d, kind="stable")  # best first, so np.unique keeps the best of duplicates
    q, t = q[order], t[order]
    _, first = np.unique(t, return_index=True)
    q, t = q[first], t[first]
    src, dst = a.points[q], b.points[t]
    for side in (0, 1):  # one match per location (SIFT repeats a point with several orientations)
        _, first = np.unique(np.round((src, dst)[side]), axis=0, return_index=True)
        keep = np.sort(first)
        src, dst = src[keep], dst[keep]
    n = len(src)
    if n < 3:
        return Match(0, n)
    try:
        transform, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_threshold, maxIters=2000
        )
    except cv2.error as e:
        raise DedupError(f"OpenCV RANSAC failed: {e}") from e
    if transform is None or mask is None:
        return Match(0, n)
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return Match(0, n, transform)
    inverse = cv2.invertAffineTransform(transform)
    overlap = min(_inside(a.points, transform, b.size), _inside(b.points, inverse, a.size))
    return Match(int(mask.sum()), n, transform, max(overlap, int(mask.sum())))


@contextlib.contextmanager
def _opencv_threads(n: int) -> Iterator[None]:
    """Run OpenCV with ``n`` internal threads (our own worker threads already parallelise)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class KeypointStore:
    """Keypoints of the scanned images, computed on demand (in parallel) and kept in a cache.

    Args:
        images: the scanned images (paths, sizes, mtimes), indexed like the embeddings.
        config: the configuration (``verify`` and ``decode`` sections are used).
        cache: where keypoints are kept; a fresh :class:`MemoryKeypointCache` when omitted.
        workers: worker threads; default ``min(4, cpu count)``.
    """

    def __init__(
        self,
        images: Sequence[HasImageFacts],
        config: Config,
        cache: KeypointCache | None = None,
        workers: int | None = None,
    ) -> None:
        self.images = images
        self.config = config
        self.cache: KeypointCache = cache if cache is not None else MemoryKeypointCache()
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.failed: dict[int, str] = {}
        self.computed = 0

    def _key(self, i: int, mirrored: bool) -> str:
        return keypoint_key(self.images[i], self.config.verify, mirrored)

    def _compute(self, i: int, mirrored: bool) -> Keypoints:
        cfg = self.config.verify
        try:
            image, _, _ = open_image(
                self.images[i].path, max_pixels=self.config.decode.max_pixels, draft_size=cfg.image_size
            )
        except ImageError as e:  # the file changed or vanished since it was embedded: no keypoints
            self.failed[i] = str(e)
            return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        gray = keypoint_image(image, cfg.image_size)
        if mirrored:
            gray = np.ascontiguousarray(gray[:, ::-1])
        kp = detect(gray, cfg.max_keypoints)
        self.cache.put(self._key(i, mirrored), kp)
        self.computed += 1
        return kp

    def get(self, i: int, mirrored: bool = False) -> Keypoints:
        """Keypoints of image ``i`` (of its mirror image when ``mirrored``), computed now if not cached."""
        kp = self.cache.get(self._key(i, mirrored))
        return kp if kp is not None else self._compute(i, mirrored)

    def prefetch(
        self, indices: Sequence[int], mirrored: bool = False, progress: ProgressFn | None = None
    ) -> None:
        """Compute (in worker threads) the keypoints of ``indices`` that are not cached yet."""
        todo = [
            i
            for i in dict.fromkeys(int(i) for i in indices)
            if self.cache.get(self._key(i, mirrored)) is None
        ]
        if progress:
            progress("keypoints", 0, len(todo))
        if not todo:
            return
        with _opencv_threads(1), ThreadPoolExecutor(self.workers, thread_name_prefix="dedup-kp") as pool:
            for done, _ in enumerate(pool.map(lambda i: self._compute(i, mirrored), todo), start=1):
                if progress and (done % 64 == 0 or done == len(todo)):
                    progress("keypoints", done, len(todo))


@dataclass(frozen=True)
class PairEvidence:
    """Why two images are (or are not) an edge of the duplicate graph.

    Attributes:
        similarities: cosine similarity of the pair for each extractor (best over mirror/rotated views).
        proposed_by: extractors whose candidate threshold (plain threshold without verification) the pair
            reached.
        mirrored: the pair matches as mirror images (keypoints matched against the mirror image when
            verified; otherwise the first extractor's best view was a mirror image).
        inliers: RANSAC-consistent keypoint matches (the better of direct and mirrored), or None when the
            pair was not verified (verification off, or unnecessary because the pair is similar enough).
        edge: the pair is an edge of the duplicate graph.
        reason: ``verified`` (enough inliers), ``similar`` (a sure/plain threshold reached) or ``rejected``.
        coverage: inliers / keypoints in the images' overlap (see :attr:`Match.coverage`), or None when
            not verified.
        rotation: degrees (-180..180] the keypoint transform turns the first image by, or None when not
            verified.

    ``reason`` is ``ignored`` for a pair that may never be an edge (the ignore list, ``--across``).
    """

    similarities: dict[str, float]
    proposed_by: tuple[str, ...]
    mirrored: bool
    inliers: int | None
    edge: bool
    reason: str
    coverage: float | None = None
    rotation: int | None = None


@dataclass(frozen=True)
class Thresholds:
    """Per-extractor cosine-similarity thresholds of a run.

    Attributes:
        plain: a pair at or above it is a duplicate when verification is off.
        candidate: a pair at or above it is a candidate for verification.
        sure: a pair at or above it is a duplicate without verification.
    """

    plain: float
    candidate: float
    sure: float


def thresholds_for(extractor: Any, config: Config) -> Thresholds:
    """Effective thresholds of one extractor: configured values, or the extractor's own for ``auto``."""
    default = float(extractor.default_threshold)
    plain = default if config.cluster.threshold == AUTO else float(config.cluster.threshold)
    cand_cfg, sure_cfg = config.verify.candidate_threshold, config.verify.sure_threshold
    candidate = float(extractor.candidate_threshold) if cand_cfg == AUTO else float(cand_cfg)
    sure = float(extractor.sure_threshold) if sure_cfg == AUTO else float(sure_cfg)
    return Thresholds(plain=plain, candidate=candidate, sure=sure)


def verification_enabled(config: Config, extractors: Sequence[Any]) -> bool:
    """``verify.enabled`` resolved: ``auto`` = on when several extractors are combined and all of them are
    weight-free (the offline default, phash+thumb+color); a single extractor keeps its plain threshold."""
    enabled = config.verify.enabled
    if enabled == AUTO:
        return len(extractors) > 1 and all(e.weight_free for e in extractors)
    return bool(enabled)


@dataclass
class Verifier:
    """The duplicate relation of a run with several extractors and/or geometric verification.

    Holds each extractor's embeddings and thresholds, decides for any pair whether it is an edge
    (:meth:`evaluate`), and records every decision in :attr:`evidence` (keyed by ``(i, j)`` with i < j).

    Args:
        names: extractor names, in order; the first one's similarity is the one reported.
        embeddings: one :class:`Embeddings` per name.
        thresholds: one :class:`Thresholds` per name.
        verify: whether pairs are checked with keypoints (else: edge = a plain threshold reached).
        store: keypoints (needed when ``verify``).
        config: the ``verify`` parameters.
        blocked: pairs that are never edges (``blocked(a, b)`` -> bool array; see :mod:`dedup.ignore`):
            decided ``ignored`` without verification.
    """

    names: list[str]
    embeddings: list[Embeddings]
    thresholds: list[Thresholds]
    verify: bool
    store: KeypointStore | None
    config: VerifyConfig
    blocked: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    evidence: dict[tuple[int, int], PairEvidence] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def similarities(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-extractor similarities, shape (n_extractors, len(a)); the first extractor's mirror flags."""
        sims = []
        flips = np.zeros(len(a), dtype=bool)
        for k, emb in enumerate(self.embeddings):
            s, f = emb.similarity(a, b)
            sims.append(s)
            if k == 0:
                flips = f
        return np.array(sims).reshape(len(self.embeddings), len(a)), flips

    def passes(self, match: Match) -> bool:
        """Whether a keypoint match verifies a pair: enough inliers, covering enough of the overlap."""
        return match.inliers >= self.config.min_inliers and match.coverage >= self.config.min_coverage

    def _verify_pair(self, i: int, j: int) -> tuple[Match, bool]:
        """(match, mirrored): keypoints of i against those of j, or, if that does not verify the pair,
        against those of j's mirror image (the better of the two is returned)."""
        assert self.store is not None
        cfg = self.config
        ki = self.store.get(i)
        direct = count_inliers(ki, self.store.get(j), ratio=cfg.ratio, ransac_threshold=cfg.ransac_threshold)
        if self.passes(direct):
            return direct, False
        flipped = count_inliers(
            ki, self.store.get(j, mirrored=True), ratio=cfg.ratio, ransac_threshold=cfg.ransac_threshold
        )
        if self.passes(flipped) or flipped.inliers > direct.inliers:
            return flipped, True
        return direct, False

    def evaluate(
        self, pairs: np.ndarray, *, workers: int = 1, progress: ProgressFn | None = None
    ) -> list[PairEvidence]:
        """Decide every pair ``(pairs[k, 0], pairs[k, 1])`` (cached decisions are reused).

        A pair is an edge when some extractor's similarity reaches its ``sure`` threshold, or, failing that,
        when it has at least ``verify.min_inliers`` RANSAC inliers (directly or mirrored). Without
        verification a pair is an edge when some extractor's similarity reaches its plain threshold.
        """
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
        keys = list(zip(lo.tolist(), hi.tolist(), strict=True))
        todo = sorted({k for k in keys if k not in self.evidence and k[0] != k[1]})
        if todo:
            a = np.array([k[0] for k in todo], dtype=np.int64)
            b = np.array([k[1] for k in todo], dtype=np.int64)
            sims, flips = self.similarities(a, b)
            cand = np.array([t.candidate for t in self.thresholds])[:, None]
            sure = np.array([t.sure for t in self.thresholds])[:, None]
            plain = np.array([t.plain for t in self.thresholds])[:, None]
            proposed = sims >= (cand if self.verify else plain) - TOLERANCE  # what the graphs proposed
            is_sure = np.asarray((sims >= sure - TOLERANCE).any(axis=0), dtype=bool)
            is_plain = np.asarray((sims >= plain - TOLERANCE).any(axis=0), dtype=bool)
            off = self.blocked(a, b) if self.blocked is not None else np.zeros(len(todo), dtype=bool)
            need = [k for k in range(len(todo)) if self.verify and not is_sure[k] and not off[k]]
            if need and self.store is not None:
                involved = np.unique(np.concatenate([a[need], b[need]])).tolist()
                self.store.prefetch(involved, progress=progress)
            results: dict[int, tuple[Match, bool]] = {}
            if need:
                if progress:
                    progress("verify", 0, len(need))
                with (
                    _opencv_threads(1),
                    ThreadPoolExecutor(max(1, workers), thread_name_prefix="dedup-verify") as pool,
                ):
                    futures = pool.map(lambda k: (k, self._verify_pair(int(a[k]), int(b[k]))), need)
                    for done, (k, res) in enumerate(futures, start=1):
                        results[k] = res
                        if progress and (done % 256 == 0 or done == len(need)):
                            progress("verify", done, len(need))
            for k, key in enumerate(todo):
                similarities = {n: round(float(sims[e, k]), 6) for e, n in enumerate(self.names)}
                by = tuple(n for e, n in enumerate(self.names) if proposed[e, k])
                if off[k]:
                    ev = PairEvidence(similarities, by, bool(flips[k]), None, False, "ignored")
                elif not self.verify:
                    ev = PairEvidence(
                        similarities,
                        by,
                        bool(flips[k]),
                        None,
                        bool(is_plain[k]),
                        "similar" if is_plain[k] else "rejected",
                    )
                elif is_sure[k]:
                    ev = PairEvidence(similarities, by, bool(flips[k]), None, True, "similar")
                else:
                    match, mirrored = results[k]
                    ok = self.passes(match)
                    ev = PairEvidence(
                        similarities,
                        by,
                        mirrored if ok else bool(flips[k]),
                        match.inliers,
                        ok,
                        "verified" if ok else "rejected",
                        round(match.coverage, 4),
                        _rotation(match.transform),
                    )
                with self._lock:
                    self.evidence[key] = ev
        return [self.evidence[k] if k[0] != k[1] else _SELF for k in keys]

    def link(self, members: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the chaining guard of :func:`dedup.cluster.form_groups`: each member against the kept image.

        Returns:
            ``(similarity, mirrored, linked)``: the first extractor's similarity, the mirror flags, and
            whether the pair is an edge (the kept image itself is always linked).
        """
        members = np.asarray(members, dtype=np.int64)
        evs = self.evaluate(np.stack([members, np.full(len(members), keep)], axis=1), workers=1)
        first = self.names[0]
        sims = np.array(
            [1.0 if m == keep else e.similarities[first] for m, e in zip(members, evs, strict=True)]
        )
        flips = np.array([e.mirrored and m != keep for m, e in zip(members, evs, strict=True)], dtype=bool)
        linked = np.array([e.edge or m == keep for m, e in zip(members, evs, strict=True)], dtype=bool)
        return sims, flips, linked

    def graph(self, n: int) -> sp.csr_matrix:
        """The duplicate graph: every edge decided so far, as cosine distance ``1 - similarity`` of the
        first extractor (explicit zeros kept; run DBSCAN on it with ``eps`` = :data:`GRAPH_EPS`)."""
        edges = [(i, j, ev) for (i, j), ev in self.evidence.items() if ev.edge]
        if not edges:
            return sp.csr_matrix((n, n), dtype=np.float64)
        first = self.names[0]
        lo = np.array([i for i, _, _ in edges], dtype=np.int64)
        hi = np.array([j for _, j, _ in edges], dtype=np.int64)
        dist = np.asarray(to_distance(np.array([ev.similarities[first] for _, _, ev in edges])), np.float64)
        graph = sp.coo_matrix(
            (np.concatenate([dist, dist]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))), shape=(n, n)
        )
        return graph.tocsr()


def _rotation(transform: np.ndarray | None) -> int | None:
    """Whole degrees (-180..180] a 2x3 similarity transform rotates by (None without a transform)."""
    if transform is None:
        return None
    degrees = int(round(float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))))
    return 180 if degrees == -180 else degrees


# Every stored entry of Verifier.graph() is an edge, whatever its distance (at most 2).
GRAPH_EPS = 2.0

_SELF = PairEvidence({}, (), False, None, True, "keep")
