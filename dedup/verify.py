"""Geometric verification of candidate pairs with local features (SIFT keypoints, ratio test, RANSAC).

Global descriptors propose candidate pairs; this stage decides which of them are duplicates. For each pair
the SIFT descriptors of both images are matched (Lowe's ratio test, one-to-one), and RANSAC looks for a
similarity transform (rotation, uniform scale, translation) consistent with as many matches as possible.
Two photos of one scene under crops, letterboxing, rotation, resizing, overlays or colour edits share many
such *inliers*; two photos of different objects on the same background share few, because the background
alone seldom survives the ratio test and the one-to-one rule with a plausible scale. The mirror image of the
second image is tried too, so horizontal (and, SIFT being rotation-invariant, vertical) flips are found.

**Bounded work.** A look-alike collection (products on one background, hands, documents) makes every image a
candidate of its nearest neighbours, and almost all those pairs are rejected. So the candidates are verified
most promising first (:func:`promise`), and an image takes part in at most ``verify.budget`` SIFT checks
unless its partner still has budget left; a pair whose images are already joined by accepted edges is not
checked at all (its group is decided). The chaining guard's checks of each member against its group's kept
image come on top; they are bounded by the number of grouped images.

**Keypoints** are computed once per image, only for images that take part in a checked pair, in worker
threads (OpenCV releases the GIL), on a grayscale copy whose longest side is ``verify.image_size`` (small
images are enlarged at most 2x). The mirror image's keypoints are derived from them (x mirrored,
descriptor bins permuted: :func:`mirrored`), not computed again. A bounded number are kept in memory
(:data:`KEYPOINT_MEMORY_IMAGES`); with the feature cache on, keypoints and every checked pair's outcome are
also stored in the cache file, so a re-scan of unchanged files computes no keypoints and matches no pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from PIL import Image

from dedup.cache import StoredKeypoints, VerifyCache, file_key
from dedup.config import AUTO, CALIBRATE, Config, VerifyConfig
from dedup.embeddings import TOLERANCE, Embeddings, to_distance
from dedup.errors import DedupError, ImageError
from dedup.images import open_image
from dedup.keep import HasImageFacts

ProgressFn = Callable[[str, int, "int | None"], None]
# A pair's keypoint check: (inliers, coverage, matched as mirror images, rotation in degrees or None).
Outcome = tuple[int, float, bool, "int | None"]

# Bump when keypoint computation changes in a way that changes the keypoints (cache identity).
KEYPOINT_PREPROCESSING = "sift/gray-lanczos-to-side-enlarge-2/uint8/v3"
# Images smaller than verify.image_size are enlarged at most this much for keypoints (see keypoint_image).
KEYPOINT_MAX_ENLARGE = 2.0
# Bump when matching changes in a way that changes a pair's outcome (cache identity of decisions).
MATCHING_VERSION = "ratio-one-to-one-ransac-seeded/derived-mirror/v2"
# Direct keypoint sets kept in memory at most (about 30 KB each): the rest come from the cache file or are
# computed again. Verification works in waves of at most VERIFY_WAVE pairs, whose images fit in memory.
KEYPOINT_MEMORY_IMAGES = 2048
VERIFY_WAVE = 256
# RANSAC's random sampling starts from this seed for every pair, so a decision never depends on the run.
RANSAC_SEED = 0

# Transforms whose scale is outside this range are not a duplicate's (and RANSAC degenerates there, e.g.
# when many keypoints of one image match a single point of the other).
MIN_SCALE, MAX_SCALE = 0.2, 5.0


@dataclass(frozen=True)
class Keypoints:
    """SIFT keypoints of one image.

    Attributes:
        points: float32 array of shape (k, 2): x, y in pixels of the image keypoints were computed on.
        descriptors: uint8 array of shape (k, 128) (SIFT's descriptors are integers 0..255).
        size: (width, height) of the image keypoints were computed on.
    """

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.points)


def keypoint_params(cfg: VerifyConfig) -> str:
    """Identity of how keypoints are computed (with the file's identity, the key of stored keypoints)."""
    return f"{KEYPOINT_PREPROCESSING}|side={cfg.image_size}|max={cfg.max_keypoints}"


def decision_params(cfg: VerifyConfig) -> str:
    """Identity of how a pair's keypoints are matched and judged (the key of stored pair outcomes)."""
    return (
        f"{keypoint_params(cfg)}|{MATCHING_VERSION}|ratio={cfg.ratio!r}|ransac={cfg.ransac_threshold!r}|"
        f"inliers={cfg.min_inliers}|coverage={cfg.min_coverage!r}|scale={MIN_SCALE!r},{MAX_SCALE!r}"
    )


# SIFT's descriptor is a 4 x 4 grid of 8-bin orientation histograms, in the keypoint's own frame. Mirroring
# the image mirrors that frame: the grid's rows swap (3 - row) and orientation bin o becomes (8 - o) % 8.
_GRID = np.arange(128).reshape(4, 4, 8)
MIRROR_PERMUTATION = np.array(
    [_GRID[3 - r, c, (8 - o) % 8] for r in range(4) for c in range(4) for o in range(8)], dtype=np.int64
)


def mirrored(kp: Keypoints) -> Keypoints:
    """The keypoints of the mirror image, derived from ``kp`` (x -> width - 1 - x, descriptor bins
    permuted by :data:`MIRROR_PERMUTATION`); no second SIFT pass. Matched against SIFT run on the mirrored
    image itself they give 0.75 inliers per keypoint, against 0.82 for a set matched with itself."""
    points = kp.points.copy()
    points[:, 0] = kp.size[0] - 1 - points[:, 0]
    return Keypoints(points, kp.descriptors[:, MIRROR_PERMUTATION], kp.size)


def keypoint_image(image: Image.Image, side: int) -> np.ndarray:
    """Grayscale uint8 array whose longest side is ``side`` pixels, or, for a smaller image, enlarged by at
    most :data:`KEYPOINT_MAX_ENLARGE`.

    A slightly smaller image (a 280 px rotated crop of a 400 px photo) needs bringing to the working size to
    yield enough keypoints; enlarging tiny images further finds nothing more (the same duplicates on every
    benchmark set with 1.5x or 2x as with up to 3.2x) and costs SIFT time with the square of the side (a
    folder of 100 px photos: 1.4x slower at 320 px than at 200 px).
    """
    gray = image.convert("L")
    w, h = gray.size
    scale = min(KEYPOINT_MAX_ENLARGE, side / max(w, h))
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
        return _no_keypoints(size)
    points = np.array([kp.pt for kp in kps], dtype=np.float32)
    return Keypoints(points, np.clip(np.rint(desc), 0, 255).astype(np.uint8), size)


def _no_keypoints(size: tuple[int, int] = (0, 0)) -> Keypoints:
    return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), size)


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
    knn = matcher.knnMatch(
        np.asarray(a.descriptors, dtype=np.float32), np.asarray(b.descriptors, dtype=np.float32), k=2
    )
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
        cv2.setRNGSeed(RANSAC_SEED)  # this thread's generator: the same pair always gives the same result
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
    """Keypoints of the scanned images: computed once per image (in worker threads), a bounded number kept
    in memory, and (with ``cache``) stored in the cache file for later scans.

    Args:
        images: the scanned images (paths, sizes, mtimes), indexed like the embeddings.
        config: the configuration (``verify`` and ``decode`` sections are used).
        cache: the verify stage's persistent cache (:class:`dedup.cache.VerifyCache`), or None.
        workers: worker threads; default ``min(4, cpu count)``.
        memory_images: direct keypoint sets kept in memory at most (least recently used ones are dropped).

    Attributes:
        computed: images whose keypoints SIFT computed in this run.
        loaded: images whose keypoints came from the cache file.
        failed: images that could not be decoded any more (they get no keypoints), with the reason.
    """

    def __init__(
        self,
        images: Sequence[HasImageFacts],
        config: Config,
        cache: VerifyCache | None = None,
        workers: int | None = None,
        memory_images: int = KEYPOINT_MEMORY_IMAGES,
    ) -> None:
        self.images = images
        self.config = config
        self.cache = cache
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.memory_images = max(1, memory_images)
        self.params = keypoint_params(config.verify)
        self.failed: dict[int, str] = {}
        self.computed = 0
        self.loaded = 0
        self._memory: OrderedDict[int, Keypoints] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, i: int, kp: Keypoints) -> None:
        with self._lock:
            self._memory[i] = kp
            self._memory.move_to_end(i)
            while len(self._memory) > self.memory_images:
                self._memory.popitem(last=False)

    def _in_memory(self, i: int) -> Keypoints | None:
        with self._lock:
            kp = self._memory.get(i)
            if kp is not None:
                self._memory.move_to_end(i)
            return kp

    def _from_cache(self, i: int) -> Keypoints | None:
        if self.cache is None:
            return None
        im = self.images[i]
        stored = self.cache.get_keypoints(self.params, im.path, im.size, im.mtime)
        if stored is None:
            return None
        self.loaded += 1
        return Keypoints(stored.points, stored.descriptors, stored.size)

    def _compute(self, i: int) -> Keypoints:
        cfg = self.config.verify
        im = self.images[i]
        try:
            image, _, _ = open_image(
                im.path, max_pixels=self.config.decode.max_pixels, draft_size=cfg.image_size
            )
        except ImageError as e:  # the file changed or vanished since it was embedded: no keypoints
            self.failed[i] = str(e)
            return _no_keypoints()
        kp = detect(keypoint_image(image, cfg.image_size), cfg.max_keypoints)
        if self.cache is not None:
            self.cache.put_keypoints(
                self.params, im.path, im.size, im.mtime, StoredKeypoints(kp.points, kp.descriptors, kp.size)
            )
        with self._lock:
            self.computed += 1
        return kp

    def _direct(self, i: int) -> Keypoints:
        kp = self._in_memory(i)
        if kp is None:
            kp = self._from_cache(i) or self._compute(i)
            self._remember(i, kp)
        return kp

    def get(self, i: int, mirrored: bool = False) -> Keypoints:
        """Keypoints of image ``i`` (of its mirror image when ``mirrored``, derived: :func:`mirrored`)."""
        kp = self._direct(i)
        return _mirror(kp) if mirrored else kp

    def prefetch(self, indices: Sequence[int]) -> None:
        """Make the keypoints of ``indices`` ready, computing missing ones in worker threads (at most
        :attr:`memory_images` stay in memory)."""
        todo = [i for i in dict.fromkeys(int(i) for i in indices) if self._in_memory(i) is None]
        if not todo:
            return
        with _opencv_threads(1), ThreadPoolExecutor(self.workers, thread_name_prefix="dedup-kp") as pool:
            try:
                for _ in pool.map(self._direct, todo):
                    pass
            except BaseException:  # Ctrl-C: drop the queued images instead of computing them all first
                pool.shutdown(wait=False, cancel_futures=True)
                raise


_mirror = mirrored  # KeypointStore.get's parameter shadows the function's name


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
    plain = default if config.cluster.threshold in (AUTO, CALIBRATE) else float(config.cluster.threshold)
    cand_cfg, sure_cfg = config.verify.candidate_threshold, config.verify.sure_threshold
    candidate = float(extractor.candidate_threshold) if cand_cfg == AUTO else float(cand_cfg)
    sure = float(extractor.sure_threshold) if sure_cfg == AUTO else float(sure_cfg)
    return Thresholds(plain=plain, candidate=candidate, sure=sure)


def verification_enabled(config: Config, extractors: Sequence[Any]) -> bool:
    """``verify.enabled`` resolved: ``auto`` = on when several extractors are combined (the default
    vgg16+phash+thumb+color and its offline form phash+thumb+color); a single extractor keeps its plain
    threshold."""
    enabled = config.verify.enabled
    if enabled == AUTO:
        return len(extractors) > 1
    return bool(enabled)


@dataclass
class Verifier:
    """The duplicate relation of a run with several extractors and/or geometric verification.

    Holds each extractor's embeddings and thresholds, decides pairs (:meth:`decide_candidates` for the
    neighbour graphs' candidates, within the budget; :meth:`evaluate` for any pair, e.g. the chaining
    guard's), and records every decision in :attr:`evidence` (keyed by ``(i, j)`` with i < j).

    Args:
        names: extractor names, in order; the first one's similarity is the one reported.
        embeddings: one :class:`Embeddings` per name.
        thresholds: one :class:`Thresholds` per name.
        verify: whether pairs are checked with keypoints (else: edge = a plain threshold reached).
        store: keypoints (needed when ``verify``).
        config: the ``verify`` parameters.
        cache: the persistent cache of pair outcomes (:class:`dedup.cache.VerifyCache`), or None.
        workers: worker threads for keypoint matching.
        blocked: pairs that are never edges (``blocked(a, b)`` -> bool array; see :mod:`dedup.ignore`):
            decided ``ignored`` without verification.

    Attributes:
        stats: counts of this run's work (``sure``, ``matched``: pairs checked with SIFT, ``reused``: pair
            outcomes from the cache, ``over_budget``, ``already_joined``).
    """

    names: list[str]
    embeddings: list[Embeddings]
    thresholds: list[Thresholds]
    verify: bool
    store: KeypointStore | None
    config: VerifyConfig
    cache: VerifyCache | None = None
    workers: int = 1
    blocked: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    evidence: dict[tuple[int, int], PairEvidence] = field(default_factory=dict)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("sure", "matched", "reused", "over_budget", "already_joined"), 0
        )
    )
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

    def _verify_pair(self, i: int, j: int) -> Outcome:
        """``(inliers, coverage, mirrored, rotation)``: keypoints of i against those of j, or, if that does
        not verify the pair, against those of j's mirror image (the better of the two)."""
        if self.store is None:
            raise RuntimeError("a Verifier that verifies needs a KeypointStore")
        cfg = self.config
        ki = self.store.get(i)
        direct = count_inliers(ki, self.store.get(j), ratio=cfg.ratio, ransac_threshold=cfg.ransac_threshold)
        best, flipped = direct, False
        if not self.passes(direct):
            mirror = count_inliers(
                ki, self.store.get(j, mirrored=True), ratio=cfg.ratio, ransac_threshold=cfg.ransac_threshold
            )
            if self.passes(mirror) or mirror.inliers > direct.inliers:
                best, flipped = mirror, True
        return best.inliers, round(best.coverage, 4), flipped, _rotation(best.transform)

    def evaluate(
        self, pairs: np.ndarray, *, workers: int | None = None, progress: ProgressFn | None = None
    ) -> list[PairEvidence]:
        """Decide every pair ``(pairs[k, 0], pairs[k, 1])`` (decided pairs are reused), without a budget.

        A pair is an edge when some extractor's similarity reaches its ``sure`` threshold, or, failing that,
        when it has at least ``verify.min_inliers`` RANSAC inliers covering ``verify.min_coverage`` of the
        images' overlap (directly or mirrored). Without verification a pair is an edge when some extractor's
        similarity reaches its plain threshold.
        """
        keys = _keys(pairs)
        self._decide([k for k in keys if k[0] != k[1]], budget=None, progress=progress)
        return [self.evidence[k] if k[0] != k[1] else _SELF for k in keys]

    def decide_candidates(
        self, pairs: np.ndarray, *, budget: int, progress: ProgressFn | None = None
    ) -> None:
        """Decide the candidate pairs of the neighbour graphs, most promising first (:func:`promise`).

        'Sure' and plain decisions cost nothing and are all made. Of the pairs that need keypoints, a pair is
        checked only while one of its images has had fewer than ``budget`` checks that found no duplicate
        (0 = no limit), and not when its images are already joined by accepted edges (their group is decided);
        the others are left undecided (not edges). Checks run in waves of :data:`VERIFY_WAVE` pairs; a pair
        whose images this wave's earlier pairs would join if accepted, or whose budget they may use up, waits
        for the next wave. So at most ``budget`` x n checks are rejections and every accepted check joins two
        groups: at most ``(budget + 1) x n`` checks in all, however alike the images look. Which pairs are
        checked depends only on earlier waves' outcomes, never on thread timing.
        """
        self._decide(_keys(pairs), budget=budget, progress=progress)

    def _decide(
        self, keys: list[tuple[int, int]], *, budget: int | None, progress: ProgressFn | None
    ) -> None:
        todo = sorted({k for k in keys if k not in self.evidence and k[0] != k[1]})
        if not todo:
            return
        a = np.array([k[0] for k in todo], dtype=np.int64)
        b = np.array([k[1] for k in todo], dtype=np.int64)
        sims, flips = self.similarities(a, b)
        cand = np.array([t.candidate for t in self.thresholds])[:, None]
        sure = np.array([t.sure for t in self.thresholds])[:, None]
        plain = np.array([t.plain for t in self.thresholds])[:, None]
        proposed = sims >= (cand if self.verify else plain) - TOLERANCE  # what the graphs proposed
        is_sure = np.asarray((sims >= sure - TOLERANCE).any(axis=0), dtype=bool)
        is_plain = np.asarray((sims >= plain - TOLERANCE).any(axis=0), dtype=bool)

        def record(k: int, ev: PairEvidence) -> None:
            with self._lock:
                self.evidence[todo[k]] = ev

        def facts(k: int) -> tuple[dict[str, float], tuple[str, ...]]:
            similarities = {n: round(float(sims[e, k]), 6) for e, n in enumerate(self.names)}
            return similarities, tuple(n for e, n in enumerate(self.names) if proposed[e, k])

        off = self.blocked(a, b) if self.blocked is not None else np.zeros(len(todo), dtype=bool)
        need = []
        for k in range(len(todo)):
            if off[k]:
                record(k, PairEvidence(*facts(k), bool(flips[k]), None, False, "ignored"))
            elif not self.verify:
                record(
                    k, PairEvidence(*facts(k), bool(flips[k]), None, bool(is_plain[k]), _plain(is_plain[k]))
                )
            elif is_sure[k]:
                record(k, PairEvidence(*facts(k), bool(flips[k]), None, True, "similar"))
                self.stats["sure"] += 1
            else:
                need.append(k)
        if not need:
            return
        scores = promise(sims[:, need], self.thresholds)
        order = [need[p] for p in sorted(range(len(need)), key=lambda p: (-scores[p], todo[need[p]]))]

        def outcome(k: int, result: Outcome) -> None:
            inliers, coverage, flipped, rotation = result
            ok = inliers >= self.config.min_inliers and coverage >= self.config.min_coverage
            mirrored = flipped if ok else bool(flips[k])
            reason = "verified" if ok else "rejected"
            record(k, PairEvidence(*facts(k), mirrored, inliers, ok, reason, coverage, rotation))

        joined = _UnionFind()
        if budget is not None:
            for (i, j), ev in self.evidence.items():
                if ev.edge:
                    joined.union(i, j)
        rejected: dict[int, int] = {}  # image -> its checks that found no duplicate
        remaining = deque(order)
        settled = 0
        if progress:
            progress("verify", 0, len(order))
        while remaining:
            wave: list[int] = []
            deferred: list[int] = []
            chosen: dict[int, int] = {}  # image -> pairs of this wave it takes part in
            linking = _UnionFind()  # the groups this wave's pairs join if they are accepted
            while remaining and len(wave) < VERIFY_WAVE:
                k = remaining.popleft()
                i, j = todo[k]
                gi, gj = (joined.find(i), joined.find(j)) if budget is not None else (i, j)
                if budget is not None and gi == gj:
                    self.stats["already_joined"] += 1
                    settled += 1
                elif budget and rejected.get(i, 0) >= budget and rejected.get(j, 0) >= budget:
                    self.stats["over_budget"] += 1
                    settled += 1
                elif budget is not None and linking.find(gi) == linking.find(gj):
                    deferred.append(k)  # this wave's pairs may join its images' groups already
                elif budget and all(rejected.get(x, 0) + chosen.get(x, 0) >= budget for x in (i, j)):
                    deferred.append(k)  # its images' earlier checks in this wave may yet find duplicates
                else:
                    wave.append(k)
                    chosen[i], chosen[j] = chosen.get(i, 0) + 1, chosen.get(j, 0) + 1
                    if budget is not None:
                        linking.union(gi, gj)
            self._run_wave(wave, todo, outcome)
            for k in wave:
                i, j = todo[k]
                if self.evidence[todo[k]].edge:
                    joined.union(i, j)
                else:
                    rejected[i], rejected[j] = rejected.get(i, 0) + 1, rejected.get(j, 0) + 1
            remaining.extendleft(reversed(deferred))
            settled += len(wave)
            if progress:
                progress("verify", settled, len(order))

    def _run_wave(
        self,
        wave: list[int],
        todo: list[tuple[int, int]],
        outcome: Callable[[int, Outcome], None],
    ) -> None:
        """Check the pairs ``wave`` (positions in ``todo``): stored outcomes first, then keypoints of the
        images still needed (in threads), then the matching (in threads)."""
        if not wave:
            return
        store = self.store
        params = decision_params(self.config)
        file_keys: dict[int, str] = {}
        if self.cache is not None and store is not None:
            for k in wave:
                for i in todo[k]:
                    if i not in file_keys:
                        im = store.images[i]
                        file_keys[i] = file_key(im.path, im.size, im.mtime)
            stored = self.cache.get_decisions(
                params, [(file_keys[todo[k][0]], file_keys[todo[k][1]]) for k in wave]
            )
        else:
            stored = {}
        fresh = []
        for k in wave:
            i, j = todo[k]
            text = stored.get((file_keys[i], file_keys[j])) if stored else None
            result = _parse_outcome(text) if text is not None else None
            if result is None:
                fresh.append(k)
            else:
                outcome(k, result)
                self.stats["reused"] += 1
        if not fresh:
            return
        if store is None:
            raise RuntimeError("a Verifier that verifies needs a KeypointStore")
        store.prefetch([i for k in fresh for i in todo[k]])

        def check(k: int) -> tuple[int, Outcome]:
            return k, self._verify_pair(*todo[k])

        with (
            _opencv_threads(1),
            ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="dedup-verify") as pool,
        ):
            try:
                for k, result in pool.map(check, fresh):
                    outcome(k, result)
                    self.stats["matched"] += 1
                    if self.cache is not None:
                        i, j = todo[k]
                        self.cache.put_decision(params, file_keys[i], file_keys[j], _format_outcome(result))
            except BaseException:  # Ctrl-C: drop the queued pairs
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def link(self, members: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the chaining guard of :func:`dedup.cluster.form_groups`: each member against the kept image.

        Returns:
            ``(similarity, mirrored, linked)``: the first extractor's similarity, the mirror flags, and
            whether the pair is an edge (the kept image itself is always linked).
        """
        members = np.asarray(members, dtype=np.int64)
        evs = self.evaluate(np.stack([members, np.full(len(members), keep)], axis=1))
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


def promise(similarities: np.ndarray, thresholds: Sequence[Thresholds]) -> np.ndarray:
    """How promising candidate pairs are: for each pair (column of ``similarities``, shape (n_extractors,
    n_pairs)), the best over extractors of how far its similarity lies between that extractor's candidate
    threshold (0) and its sure threshold (1). Pairs are checked in this order, best first."""
    cand = np.array([t.candidate for t in thresholds])[:, None]
    span = np.array([min(t.sure, 1.0) - t.candidate for t in thresholds])[:, None]
    span = np.where(span > 0, span, 1.0)
    return np.asarray(
        ((np.asarray(similarities, dtype=np.float64).reshape(len(thresholds), -1) - cand) / span).max(axis=0)
    )


def _keys(pairs: np.ndarray) -> list[tuple[int, int]]:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def _plain(edge: bool) -> str:
    return "similar" if edge else "rejected"


def _format_outcome(result: Outcome) -> str:
    inliers, coverage, flipped, rotation = result
    record = {"inliers": inliers, "coverage": coverage, "mirrored": flipped, "rotation": rotation}
    return json.dumps(record, separators=(",", ":"))


def _parse_outcome(text: str) -> Outcome | None:
    """A stored outcome, or None when it does not read as one (treated as a miss)."""
    try:
        d = json.loads(text)
        inliers, coverage, flipped, rotation = d["inliers"], d["coverage"], d["mirrored"], d["rotation"]
    except (ValueError, KeyError, TypeError):
        return None
    if (
        not isinstance(inliers, int)
        or not isinstance(coverage, (int, float))
        or not isinstance(flipped, bool)
    ):
        return None
    if rotation is not None and not isinstance(rotation, int):
        return None
    return inliers, float(coverage), flipped, rotation


def _rotation(transform: np.ndarray | None) -> int | None:
    """Whole degrees (-180..180] a 2x3 similarity transform rotates by (None without a transform)."""
    if transform is None:
        return None
    degrees = int(round(float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))))
    return 180 if degrees == -180 else degrees


class _UnionFind:
    """Disjoint sets of image indices (the groups accepted edges have joined so far)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent.get(x, x)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# Every stored entry of Verifier.graph() is an edge, whatever its distance (at most 2).
GRAPH_EPS = 2.0

_SELF = PairEvidence({}, (), False, None, True, "keep")
