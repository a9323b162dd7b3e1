"""Thresholds that calibrate themselves on the user's own collection and model (``cluster.threshold:
calibrate``; ``auto`` does it for the extractors without tuned defaults: every CNN and exported model).

How (:func:`calibrate`): a seeded sample of ``calibration.sample`` scanned images gets synthetic copies
(:data:`TRANSFORMS`: JPEG re-encode at quality 40, resize to half, 80 % centre crop, horizontal flip, +30 %
brightness), embedded exactly as the scan embeds files (same decoder, views, extractor). Each copy's
similarity to its original is a **positive**; each sampled image's ``calibration.neighbours`` nearest other
images of the collection are **negatives**, except those the keypoint check (:mod:`dedup.verify`, the
scan's own pair decision) shows to be copies (real duplicates in the collection must not count as false
pairs). From the two sets:

* ``plain`` (the threshold without verification): the lowest similarity at and above which the sample's
  pairs are at least ``calibration.target_precision`` positives (and stay so at every higher threshold);
  here a neighbour at least as similar as the image's own median synthetic copy is taken for a real copy
  the keypoints could not confirm (a tiny thumbnail) and left out;
* ``sure`` (a pair above it skips the keypoint check): halfway between the highest negative (all of them,
  only keypoint-verified copies left out) and 1, and not below ``plain``: no sampled non-copy reaches it;
* ``candidate`` (a pair at or above it is checked): the similarity 98 % of the copies reach, but not below
  the median negative, and never stricter than ``plain`` or the extractor's uncalibrated candidate
  threshold (synthetic copies are easier than real ones: calibration may widen the candidates, not narrow
  them).

The estimated precision and recall at ``plain`` (and per transform) are those of the sample; the report
records them with the sample size (:meth:`Calibration.to_dict`). Cost: ``sample x 5`` extra embeddings and at
most ``sample x neighbours`` keypoint checks, whatever the collection's size; the result is cached by the
extractor's identity, the sampled files and these settings (``<cache dir>/calibration/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from dedup.cache import cache_dir, extractor_identity, file_key
from dedup.config import Config
from dedup.embeddings import Embeddings
from dedup.errors import ImageError
from dedup.extract import cache_identity, extract_features
from dedup.features import Extractor
from dedup.images import ImageFile, ImageRecord, open_image
from dedup.verify import KeypointStore, Thresholds, Verifier

WarnFn = Callable[[str], None]

#: Bump when the copies, the sampling or the threshold rules change (part of the cache key).
CALIBRATION_VERSION = "calibrate/v3"
#: Share of the synthetic copies that must reach the candidate threshold.
CANDIDATE_RECALL = 0.98


def _jpeg(im: Image.Image) -> tuple[Image.Image, int]:
    return im, 40


def _resize(im: Image.Image) -> tuple[Image.Image, int]:
    return im.resize((max(16, im.width // 2), max(16, im.height // 2)), Image.Resampling.LANCZOS), 90


def _crop(im: Image.Image) -> tuple[Image.Image, int]:
    w, h = im.size
    dx, dy = int(w * 0.1), int(h * 0.1)
    return im.crop((dx, dy, w - dx, h - dy)), 90


def _flip(im: Image.Image) -> tuple[Image.Image, int]:
    return ImageOps.mirror(im), 90


def _bright(im: Image.Image) -> tuple[Image.Image, int]:
    return ImageEnhance.Brightness(im).enhance(1.3), 90


#: The synthetic copies: name -> (image -> (copy, JPEG quality it is saved at)).
TRANSFORMS: dict[str, Callable[[Image.Image], tuple[Image.Image, int]]] = {
    "jpeg": _jpeg,
    "resize": _resize,
    "crop": _crop,
    "flip": _flip,
    "brightness": _bright,
}


@dataclass(frozen=True)
class Calibration:
    """One extractor's calibrated thresholds and what they rest on.

    Attributes:
        extractor: its name.
        sample: images sampled; copies: synthetic copies scored (positives); negatives: nearest non-copies
            scored for the plain threshold; excluded: nearest neighbours taken for copies (the keypoint
            check verified them, or they are as similar as the image's own median synthetic copy; the
            latter still count for the sure threshold).
        target_precision: ``calibration.target_precision``.
        plain, candidate, sure: the thresholds (cosine similarity; a sure threshold above 1 is never met).
        precision, recall: estimated at ``plain`` on the sample; recall_by_transform: per copy kind.
        sure_recall: share of the copies at or above ``sure`` (decided without a keypoint check).
        cached: read from the calibration cache.
    """

    extractor: str
    sample: int
    copies: int
    negatives: int
    excluded: int
    target_precision: float
    plain: float
    candidate: float
    sure: float
    precision: float
    recall: float
    sure_recall: float
    recall_by_transform: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def thresholds(self) -> Thresholds:
        return Thresholds(plain=self.plain, candidate=self.candidate, sure=self.sure)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def needs_calibration(extractor: Extractor, config: Config) -> bool:
    """``cluster.threshold: calibrate``, or ``auto`` for an extractor without tuned defaults (not weight-free:
    a CNN backbone, ``keras-model``, ``onnx``)."""
    threshold = config.cluster.threshold
    return threshold == "calibrate" or (threshold == "auto" and not extractor.weight_free)


def _pick_thresholds(
    pos: np.ndarray,
    neg: np.ndarray,
    target: float,
    strict: np.ndarray | None = None,
    loosest: float = 1.0,
) -> tuple[float, float, float]:
    """``(plain, candidate, sure)`` from positive and negative similarities (see the module docstring);
    ``strict`` are the negatives the sure threshold must stay above (default ``neg``); the candidate
    threshold is never stricter than ``loosest`` (the extractor's uncalibrated one)."""
    strict = neg if strict is None else strict
    top_neg = float(neg.max()) if len(neg) else -1.0
    values = np.unique(np.concatenate([pos, neg]))[::-1]  # high to low
    plain = float(min(1.0, top_neg + 1e-6))  # no sampled negative at or above it
    for t in values:
        p, n = int((pos >= t).sum()), int((neg >= t).sum())
        if p and p / (p + n) >= target:
            plain = float(t)
        elif p + n:
            break  # precision dropped below the target: lower thresholds are not taken
    sure = max(plain, (float(strict.max()) + 1.0) / 2) if len(strict) else plain
    candidate = plain
    if len(pos):  # what 98 % of the copies reach, but not below the typical nearest non-copy
        floor = float(np.median(strict)) if len(strict) else -1.0
        candidate = min(plain, loosest, max(float(np.quantile(pos, 1 - CANDIDATE_RECALL)), floor))
    return round(plain, 4), round(candidate, 4), round(min(sure, 1.01), 4)


def _key(extractor: Extractor, config: Config, images: Sequence[ImageRecord], sample: np.ndarray) -> str:
    info, _ = cache_identity(extractor, config)
    c, v = config.calibration, config.verify
    files = "\0".join(file_key(images[i].path, images[i].size, images[i].mtime) for i in sample)
    text = (
        f"{CALIBRATION_VERSION}\0{extractor_identity(info)}\0{c.target_precision}\0{c.neighbours}\0{len(images)}"
        f"\0{v.min_inliers}\0{v.min_coverage}\0{v.ratio}\0{v.max_keypoints}\0{v.image_size}\0{files}"
    )
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _nearest(embeddings: Embeddings, i: int, count: int) -> np.ndarray:
    """The ``count`` images most similar to image ``i`` (views included), exactly; never ``i`` itself."""
    n = len(embeddings.vectors)
    others = np.delete(np.arange(n), i)
    sims, _ = embeddings.similarity(others, np.full(len(others), i))
    order = np.lexsort((others, -sims))[:count]
    return np.asarray(others[order], dtype=np.int64)


def calibrate(
    images: Sequence[ImageRecord],
    extractor: Extractor,
    embeddings: Embeddings,
    config: Config,
    *,
    warn: WarnFn | None = None,
) -> Calibration | None:
    """Calibrate ``extractor``'s thresholds on the scanned ``images`` (their ``embeddings``).

    Returns:
        the :class:`Calibration`, or None when the collection has fewer than 3 images or no sampled image
        could be copied (the extractor's defaults then apply; ``warn`` says so).
    """
    c = config.calibration
    n = len(images)
    if n < 3:
        if warn is not None:
            warn(f"calibration of {extractor.name} needs at least 3 images; its default thresholds are used")
        return None
    rng = np.random.default_rng(c.seed)
    sample = np.sort(rng.choice(n, size=min(c.sample, n), replace=False))
    key = _key(extractor, config, images, sample)
    path = cache_dir(config.cache) / "calibration" / f"{key}.json"
    if config.cache.enabled and path.is_file():
        try:
            return replace(Calibration(**json.loads(path.read_text(encoding="utf-8"))), cached=True)
        except (OSError, ValueError, TypeError):
            pass  # a damaged entry is computed again

    # Positives: synthetic copies of the sample, embedded like files of the scan (the model is loaded now
    # if every file came from the feature cache).
    extractor.load()
    pos_of: list[tuple[int, str]] = []  # (sampled image, transform) per copy
    files: list[ImageFile] = []
    with tempfile.TemporaryDirectory(prefix="dedup-calibrate-") as tmp:
        for i in sample:
            try:
                im, _, _ = open_image(images[i].path, max_pixels=config.decode.max_pixels, draft_size=None)
            except ImageError:
                continue
            im = _bounded(im)
            for name, transform in TRANSFORMS.items():
                copy, quality = transform(im)
                out = os.path.join(tmp, f"{i}-{name}.jpg")
                copy.convert("RGB").save(out, quality=quality)
                st = os.stat(out)
                files.append(ImageFile(out, st.st_size, st.st_mtime, st.st_mtime_ns))
                pos_of.append((int(i), name))
        if not files:
            if warn is not None:
                warn(f"calibration of {extractor.name}: no sampled image could be copied; defaults are used")
            return None
        decoded, copy_emb, failed = extract_features(files, extractor, config)
    done = {f.path for f in decoded}
    kept = [k for k, f in enumerate(files) if f.path in done]
    pos_of = [pos_of[k] for k in kept]
    combined = embeddings.concat(copy_emb)
    originals = np.array([i for i, _ in pos_of], dtype=np.int64)
    pos, _ = combined.similarity(originals, n + np.arange(len(pos_of)))

    # Negatives: each sampled image's nearest other images, unless the keypoints show them to be copies.
    pairs = np.array(
        [(min(i, j), max(i, j)) for i in sample for j in _nearest(embeddings, int(i), c.neighbours)],
        dtype=np.int64,
    ).reshape(-1, 2)
    pairs = np.unique(pairs, axis=0)
    never = Thresholds(plain=2.0, candidate=-2.0, sure=2.0)
    checker = Verifier(
        names=[extractor.name],
        embeddings=[embeddings],
        thresholds=[never],
        verify=True,
        store=KeypointStore(images, config),
        config=config.verify,
    )
    evidence = checker.evaluate(pairs)
    copies = np.array([ev.edge for ev in evidence], dtype=bool)
    strict, _ = embeddings.similarity(pairs[~copies, 0], pairs[~copies, 1])
    # For the plain threshold a neighbour as close as the image's own typical copy is taken for a copy too
    # (a tiny thumbnail of it that the keypoints cannot confirm); the sure threshold stays above them all.
    typical = {i: float(np.median([pos[k] for k, (o, _) in enumerate(pos_of) if o == i])) for i, _ in pos_of}
    left = pairs[~copies]
    alike = np.array(
        [
            s >= min(typical.get(int(a), 2.0), typical.get(int(b), 2.0))
            for (a, b), s in zip(left, strict, strict=True)
        ],
        dtype=bool,
    ).reshape(-1)
    neg = strict[~alike]

    loosest = float(extractor.candidate_threshold)  # synthetic copies are easier than real ones
    plain, candidate, sure = _pick_thresholds(pos, neg, c.target_precision, strict, loosest)
    tp, fp = int((pos >= plain).sum()), int((neg >= plain).sum())
    by_transform = {
        name: round(float(np.mean([pos[k] >= plain for k, (_, t) in enumerate(pos_of) if t == name])), 4)
        for name in TRANSFORMS
        if any(t == name for _, t in pos_of)
    }
    result = Calibration(
        extractor=extractor.name,
        sample=len(sample),
        copies=len(pos),
        negatives=len(neg),
        excluded=int(copies.sum()) + int(alike.sum()),
        target_precision=c.target_precision,
        plain=plain,
        candidate=candidate,
        sure=sure,
        precision=round(tp / (tp + fp), 4) if tp + fp else 1.0,
        recall=round(tp / len(pos), 4) if len(pos) else 0.0,
        sure_recall=round(float((pos >= sure).mean()), 4) if len(pos) else 0.0,
        recall_by_transform=by_transform,
    )
    if config.cache.enabled:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path = path.with_suffix(".tmp")
            tmp_path.write_text(json.dumps(result.to_dict()), encoding="utf-8")
            tmp_path.replace(path)
        except OSError as e:
            if warn is not None:
                warn(f"cannot store the calibration in {path.parent}: {e.strerror or e}")
    return result


def _bounded(im: Image.Image, side: int = 1024) -> Image.Image:
    """The image shrunk to at most ``side`` px on its longest side (copies of huge photos stay cheap)."""
    if max(im.size) <= side:
        return im
    scale = side / max(im.size)
    return im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BOX
    )


def apply(thresholds: Thresholds, calibration: Calibration, config: Config) -> Thresholds:
    """``thresholds`` with the calibrated values wherever the configuration leaves them to the extractor
    (``auto`` / ``calibrate``); a number the user set is kept."""
    v = config.verify
    return Thresholds(
        plain=calibration.plain if config.cluster.threshold in ("auto", "calibrate") else thresholds.plain,
        candidate=calibration.candidate if v.candidate_threshold == "auto" else thresholds.candidate,
        sure=calibration.sure if v.sure_threshold == "auto" else thresholds.sure,
    )
