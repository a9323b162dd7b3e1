"""The weight-free extractors: ``phash``, ``thumb`` and ``color`` (and the border trimming they share).

Each one turns a decoded image into an L2-normalised vector with numpy, Pillow and scipy only: no model,
no weights, cheap enough to embed extra (mirrored, rotated) views. They are also the offline fallback
when a CNN's ImageNet weights cannot be obtained (``features.offline_fallback``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from PIL import Image
from scipy import fft

from dedup.embeddings import l2_normalize
from dedup.errors import ConfigError

# Cosine similarity threshold for phash vectors, where cos = 1 - 2 * hamming / bits exactly.
# 0.70 <=> hamming <= 0.15 * bits, i.e. at most 38 of 256 bits differ (hash_size 16) -- close to
# imagededup's PHash default of 10 of 64 bits (cos 0.6875). To be calibrated with the benchmarks.
PHASH_DEFAULT_THRESHOLD = 0.70

# Loose "candidate" and "sure" thresholds used by the verify stage (dedup.verify): pairs at or above the
# candidate threshold of any extractor are checked with keypoints; pairs at or above the sure threshold are
# duplicates without that check. Chosen with bench/run_bench.py (see configs/default.yaml and the README).
PHASH_CANDIDATE_THRESHOLD = 0.70
PHASH_SURE_THRESHOLD = 0.90

# thumb: cosine similarity of zero-mean, unit-norm grayscale thumbnails (= Pearson correlation of pixels).
THUMB_DEFAULT_THRESHOLD = 0.90
THUMB_CANDIDATE_THRESHOLD = 0.90
THUMB_SURE_THRESHOLD = 0.995

# color: cosine similarity of square-rooted HSV histograms (= Bhattacharyya coefficient of the histograms).
COLOR_DEFAULT_THRESHOLD = 0.97
COLOR_CANDIDATE_THRESHOLD = 0.88
COLOR_SURE_THRESHOLD = 1.01  # never sure from colour alone: look-alikes share colour distributions

# Bump when prepare()/embed() change in a way that changes the vectors (feature-cache identity).
PHASH_PREPROCESSING = "phash/gray-lanczos/dct2-ortho/median/blank-zero/v2"

# A (nearly) blank image -- its grayscale working copy has a standard deviation below this many grey levels
# (0..255) -- has no layout to hash: the signs of its DCT coefficients are rounding noise, the same for every
# blank image whatever its colour. Its phash is the zero vector (similarity 0 to everything), like thumb's.
BLANK_STD = 1.0
THUMB_PREPROCESSING = "thumb/trim-borders/gray-box/zero-mean/l2/v1"
COLOR_PREPROCESSING = "color/trim-borders/rgb-box64/hsv-pillow/joint-hist/sqrt/v1"


# --------------------------------------------------------------------------------------------------- base

_Self = TypeVar("_Self", bound="_WeightFree")


class _WeightFree:
    """What the weight-free extractors share: no weights, cheap enough to embed extra views, nothing to load,
    and the identity of an offline fallback (``requested`` is the extractor the user asked for,
    ``fallback_reason`` why it could not be used)."""

    name: str
    dim: int
    default_threshold: float
    candidate_threshold: float
    sure_threshold: float
    decode_size: int | None
    weight_free = True
    orientation_invariant = False  # rotated or mirrored views give other vectors

    def __init__(self, requested: str, fallback_reason: str | None) -> None:
        self.requested = requested
        self.fallback_reason = fallback_reason

    def load(self: _Self) -> _Self:
        """Nothing to load: the extractor is ready when constructed."""
        return self

    def _identity(self, **facts: Any) -> dict[str, Any]:
        """``info()``: name, weights (None), pooling (None), the extractor's own ``facts``, fallback_used,
        requested, fallback_reason."""
        return {
            "name": self.name,
            "weights": None,
            "pooling": None,
            **facts,
            "fallback_used": self.requested != self.name,
            "requested": self.requested,
            "fallback_reason": self.fallback_reason,
        }


# --------------------------------------------------------------------------------------------------- phash


class PHashExtractor(_WeightFree):
    """Weight-free DCT perceptual hash used as a ±1 vector.

    The image is converted to grayscale (ITU-R 601 luma), resized to ``4*hash_size`` square with Pillow's
    LANCZOS filter, transformed with a 2-D DCT (type II, orthonormal) and the low-frequency
    ``hash_size x hash_size`` block is kept; bit = coefficient > median of that block. Bits become +1/-1
    divided by sqrt(bits), so vectors are unit-norm and the cosine similarity of two hashes is exactly
    ``1 - 2 * hamming / bits``. A blank image (grey-level standard deviation below :data:`BLANK_STD`)
    has no hash: its vector is zero and matches nothing.

    Args:
        hash_size: side of the kept DCT block; the hash has ``hash_size**2`` bits (16 -> 256).
        requested: the extractor the user asked for (differs from "phash" when this is a fallback).
        fallback_reason: why the requested extractor could not be used, if this is a fallback.
    """

    name = "phash"
    candidate_threshold = PHASH_CANDIDATE_THRESHOLD
    sure_threshold = PHASH_SURE_THRESHOLD

    def __init__(
        self, hash_size: int = 16, *, requested: str = "phash", fallback_reason: str | None = None
    ) -> None:
        if hash_size < 2:
            raise ConfigError(f"features.hash_size: {hash_size!r} is too small; allowed values: 2 or more")
        super().__init__(requested, fallback_reason)
        self.hash_size = hash_size
        self.dim = hash_size * hash_size
        self.default_threshold = PHASH_DEFAULT_THRESHOLD
        self.image_size = 4 * hash_size
        # JPEG draft decoding down to the working size (at least 64 px; the LANCZOS resize does the rest):
        # 13-16 % faster than twice that size, with the same pairwise F1 on imagededup-testdata, jenssegers
        # and generated clothing sets (measured for issue 5).
        self.decode_size = self.image_size

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), pooling (None), input_size, dim, hash_size, preprocessing,
        fallback_used, requested, fallback_reason."""
        return self._identity(
            input_size=self.image_size,
            dim=self.dim,
            hash_size=self.hash_size,
            preprocessing=PHASH_PREPROCESSING,
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Grayscale, LANCZOS-resized pixels.

        Returns:
            float32 array of shape (4*hash_size, 4*hash_size), values 0..255.
        """
        side = self.image_size
        gray = image.convert("L").resize((side, side), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Hash a batch of prepared images.

        Args:
            batch: array of shape (n, 4*hash_size, 4*hash_size).

        Returns:
            float32 array of shape (n, hash_size**2), entries ±1/hash_size (unit-norm rows); rows of
            blank images are zero.
        """
        x = np.asarray(batch, dtype=np.float64)
        side = self.image_size
        if x.ndim != 3 or x.shape[1:] != (side, side):
            raise ValueError(f"phash expects a batch of shape (n, {side}, {side}), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        hs = self.hash_size
        coeffs = fft.dctn(x, type=2, norm="ortho", axes=(1, 2))[:, :hs, :hs].reshape(len(x), self.dim)
        median = np.median(coeffs, axis=1, keepdims=True)
        signs = np.where(coeffs > median, 1.0, -1.0).astype(np.float32)
        signs[x.reshape(len(x), -1).std(axis=1) < BLANK_STD] = 0.0  # blank: no layout, no hash
        return signs / np.float32(np.sqrt(self.dim))


# --------------------------------------------------------------------------------------------------- borders

# A border row/column belongs to a letterbox bar when its pixels differ from the bar's colour by at most
# this much (0..255 luma) on average; at most this fraction of each side is trimmed.
BORDER_TOLERANCE = 10.0
BORDER_MAX_FRACTION = 0.35


def trim_borders(image: Image.Image) -> Image.Image:
    """The image without uniform bars along its edges (letterboxing, pillarboxing, padding).

    A side is trimmed while its outermost rows (or columns) stay within :data:`BORDER_TOLERANCE` of the
    colour of the outermost one, up to :data:`BORDER_MAX_FRACTION` of the side; a bar thinner than 2 % of
    the side is left alone (it is more likely a frame line or a plain background than padding).
    """
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    h, w = gray.shape
    if h < 8 or w < 8:
        return image

    def depth(lines: np.ndarray) -> int:
        """How many leading lines of ``lines`` (n_lines, length) are one uniform bar."""
        limit = int(len(lines) * BORDER_MAX_FRACTION)
        ref = lines[0].mean()
        dev = np.abs(lines[:limit] - ref).mean(axis=1)
        bad = np.flatnonzero(dev > BORDER_TOLERANCE)
        n = int(bad[0]) if len(bad) else limit
        return n if n >= 0.02 * len(lines) else 0

    top, bottom = depth(gray), depth(gray[::-1])
    left, right = depth(gray.T), depth(gray.T[::-1])
    if top == bottom == left == right == 0:
        return image
    return image.crop((left, top, w - right, h - bottom))


# --------------------------------------------------------------------------------------------------- thumb


class ThumbExtractor(_WeightFree):
    """Weight-free grayscale thumbnail: the image's coarse layout of brightness, as a vector.

    Uniform letterbox bars are trimmed (:func:`trim_borders`), then the image is converted to grayscale
    (ITU-R 601 luma) and shrunk to ``size`` x ``size`` with Pillow's BOX filter (the mean of each cell,
    aspect ratio not kept); ``embed`` subtracts each thumbnail's mean and L2-normalises it, so the cosine
    similarity of two thumbnails is the Pearson correlation of their pixels: insensitive to brightness and
    contrast changes, re-encoding, resizing and colour edits, but not to crops.
    A flat image (no contrast) becomes the zero vector and matches nothing.

    Args:
        size: side of the thumbnail in pixels (``dim = size**2``).
        requested: the extractor the user asked for (differs from "thumb" when this is a fallback).
        fallback_reason: why the requested extractor could not be used, if this is a fallback.
    """

    name = "thumb"
    default_threshold = THUMB_DEFAULT_THRESHOLD
    candidate_threshold = THUMB_CANDIDATE_THRESHOLD
    sure_threshold = THUMB_SURE_THRESHOLD

    def __init__(
        self, size: int = 16, *, requested: str = "thumb", fallback_reason: str | None = None
    ) -> None:
        if size < 4:
            raise ConfigError(f"features.thumb_size: {size!r} is too small; allowed values: 4 or more")
        super().__init__(requested, fallback_reason)
        self.size = size
        self.dim = size * size
        self.decode_size = 8 * size

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), pooling (None), input_size, dim, preprocessing, fallback_used,
        requested, fallback_reason."""
        return self._identity(input_size=self.size, dim=self.dim, preprocessing=THUMB_PREPROCESSING)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Grayscale thumbnail.

        Returns:
            float32 array of shape (size, size), values 0..255.
        """
        gray = trim_borders(image).convert("L").resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(gray, dtype=np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Zero-mean, unit-norm thumbnails.

        Args:
            batch: array of shape (n, size, size).

        Returns:
            float32 array of shape (n, size**2).
        """
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.size, self.size):
            raise ValueError(f"thumb expects a batch of shape (n, {self.size}, {self.size}), got {x.shape}")
        flat = x.reshape(len(x), self.dim)
        flat = flat - flat.mean(axis=1, keepdims=True)
        flat[np.abs(flat).max(axis=1, initial=0.0) < 1.0] = 0.0  # flat image: no layout to compare
        return l2_normalize(flat)


# --------------------------------------------------------------------------------------------------- color


class ColorExtractor(_WeightFree):
    """Weight-free colour descriptor: a joint HSV histogram, square-rooted (Hellinger).

    Uniform letterbox bars are trimmed (:func:`trim_borders`), the image is shrunk to 64 x 64 (BOX filter)
    and converted to HSV with Pillow; each pixel falls into one of
    ``hue_bins x 4 x 4`` (hue x saturation x value) bins. Bin frequencies (summing to 1) are square-rooted,
    which makes each vector unit-norm and the cosine similarity of two vectors their Bhattacharyya
    coefficient. The descriptor ignores where colours are, so it is invariant to flips, rotations and small
    crops, but it misses grayscale and hue edits, and different objects of similar colours look alike to it:
    use it to propose candidates, not to decide alone.

    Args:
        hue_bins: number of hue bins.
        requested: the extractor the user asked for (differs from "color" when this is a fallback).
        fallback_reason: why the requested extractor could not be used, if this is a fallback.
    """

    name = "color"
    orientation_invariant = True  # rotated or mirrored views would give the same vector
    default_threshold = COLOR_DEFAULT_THRESHOLD
    candidate_threshold = COLOR_CANDIDATE_THRESHOLD
    sure_threshold = COLOR_SURE_THRESHOLD
    image_size = 64
    sat_bins = 4
    val_bins = 4

    def __init__(
        self, hue_bins: int = 16, *, requested: str = "color", fallback_reason: str | None = None
    ) -> None:
        if hue_bins < 2:
            raise ConfigError(f"features.color_bins: {hue_bins!r} is too small; allowed values: 2 or more")
        super().__init__(requested, fallback_reason)
        self.hue_bins = hue_bins
        self.dim = hue_bins * self.sat_bins * self.val_bins
        self.decode_size = 2 * self.image_size

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), pooling (None), input_size, dim, hue_bins, preprocessing,
        fallback_used, requested, fallback_reason."""
        return self._identity(
            input_size=self.image_size,
            dim=self.dim,
            hue_bins=self.hue_bins,
            preprocessing=COLOR_PREPROCESSING,
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Small HSV image.

        Returns:
            uint8 array of shape (64, 64, 3): Pillow's H, S, V channels, each 0..255.
        """
        rgb = trim_borders(image if image.mode == "RGB" else image.convert("RGB"))
        small = rgb.resize((self.image_size, self.image_size), Image.Resampling.BOX)
        return np.asarray(small.convert("HSV"), dtype=np.uint8)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Square-rooted joint histograms.

        Args:
            batch: array of shape (n, 64, 64, 3), HSV values 0..255.

        Returns:
            float32 array of shape (n, hue_bins * 16), unit-norm rows.
        """
        x = np.asarray(batch)
        side = self.image_size
        if x.ndim != 4 or x.shape[1:] != (side, side, 3):
            raise ValueError(f"color expects a batch of shape (n, {side}, {side}, 3), got {x.shape}")
        n = len(x)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        hsv = x.reshape(n, side * side, 3).astype(np.int64)
        h = hsv[..., 0] * self.hue_bins // 256
        sat = hsv[..., 1] * self.sat_bins // 256
        val = hsv[..., 2] * self.val_bins // 256
        bins = (h * self.sat_bins + sat) * self.val_bins + val + self.dim * np.arange(n)[:, None]
        counts = np.bincount(bins.ravel(), minlength=n * self.dim).reshape(n, self.dim)
        return np.sqrt(counts / float(side * side)).astype(np.float32)
