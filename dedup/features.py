"""Feature extractors: one decoded image in, one L2-normalised vector out.

Every extractor follows the small :class:`Extractor` protocol; :data:`EXTRACTORS` maps a name (the
``features.extractor`` config value, or the part before ``:`` for parameterised names such as
``keras-model:PATH``) to a factory, so new extractors plug in without touching the pipeline.

* ``vgg16``: Keras VGG16 without its classifier top, global ``avg``/``max`` pooling, ImageNet ("caffe")
  preprocessing; 512-d vectors. Weights: ``imagenet`` (Keras' cache / download), a weights file, or ``none``.
* ``resnet50``: Keras ResNet50 the same way (same weight rules, its own preprocessing); 2048-d vectors.
* ``keras-model:PATH``: any saved Keras model (``.keras`` / ``.h5``) whose output is a vector or a feature
  map (globally pooled); preprocessing from ``features.preprocessing``.
* ``phash``: a weight-free DCT perceptual hash (``hash_size**2`` bits) as a ±1 vector.
* ``thumb``: a weight-free grayscale thumbnail (``thumb_size`` square), zero-mean and unit-norm.
* ``color``: a weight-free HSV colour histogram (Hellinger: square roots of the bin frequencies).

Several extractors can be combined (``phash+thumb+color``, see :func:`make_extractors`); each keeps its own
vectors and thresholds, and :mod:`dedup.verify` decides which of their candidate pairs are duplicates.

VGG16 and ResNet50 are one :class:`KerasAppExtractor` parameterised by a :class:`KerasApp` (constructor,
weights file name / URL / md5, preprocessing, default threshold). TensorFlow/Keras is imported lazily inside
the Keras code, so ``import dedup.features`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import sys
import tempfile
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from scipy import fft

from dedup.config import FeaturesConfig
from dedup.embeddings import l2_normalize
from dedup.errors import ConfigError, WeightsError

WarnFn = Callable[[str], None]

# The "notop" ImageNet weights exactly as keras.applications.VGG16 fetches them
# (keras.src.applications.vgg16.WEIGHTS_PATH_NO_TOP and its md5; a test checks they still agree).
VGG16_NOTOP_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_NOTOP_FILENAME
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"

# Cosine similarity at or above which two VGG16 (global-average-pooled, ImageNet) vectors are called
# duplicates. 0.90 is the customary threshold for VGG16-GAP near-duplicate search; it could not be
# calibrated here because the ImageNet weights cannot be downloaded offline.
VGG16_DEFAULT_THRESHOLD = 0.90

# Cosine similarity threshold for phash vectors, where cos = 1 - 2 * hamming / bits exactly.
# 0.70 <=> hamming <= 0.15 * bits, i.e. at most 38 of 256 bits differ (hash_size 16) -- close to
# imagededup's PHash default of 10 of 64 bits (cos 0.6875). To be calibrated with the benchmarks.
PHASH_DEFAULT_THRESHOLD = 0.70

# The "notop" ImageNet weights exactly as keras.applications.ResNet50 fetches them
# (keras.src.applications.resnet: BASE_WEIGHTS_PATH + file name, WEIGHTS_HASHES["resnet50"][1]; tested).
RESNET50_NOTOP_FILENAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_NOTOP_FILENAME
)
RESNET50_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"

# ResNet50 (global-average-pooled, ImageNet) vectors: the same customary 0.90, equally uncalibrated offline.
RESNET50_DEFAULT_THRESHOLD = 0.90

# A user's own Keras model: nothing is known about its vectors; 0.90 is a starting point, set --threshold.
KERAS_MODEL_DEFAULT_THRESHOLD = 0.90

# Loose "candidate" and "sure" thresholds used by the verify stage (dedup.verify): pairs at or above the
# candidate threshold of any extractor are checked with keypoints; pairs at or above the sure threshold are
# duplicates without that check. Chosen with bench/run_bench.py (see configs/default.yaml and the README).
PHASH_CANDIDATE_THRESHOLD = 0.70
PHASH_SURE_THRESHOLD = 0.90
VGG16_CANDIDATE_THRESHOLD = 0.80  # not calibrated (no ImageNet weights offline)
VGG16_SURE_THRESHOLD = 0.97  # not calibrated (no ImageNet weights offline)

# thumb: cosine similarity of zero-mean, unit-norm grayscale thumbnails (= Pearson correlation of pixels).
THUMB_DEFAULT_THRESHOLD = 0.90
THUMB_CANDIDATE_THRESHOLD = 0.90
THUMB_SURE_THRESHOLD = 0.995

# color: cosine similarity of square-rooted HSV histograms (= Bhattacharyya coefficient of the histograms).
COLOR_DEFAULT_THRESHOLD = 0.97
COLOR_CANDIDATE_THRESHOLD = 0.88
COLOR_SURE_THRESHOLD = 1.01  # never sure from colour alone: look-alikes share colour distributions

# Seed of the random weights used with ``weights: none`` (deterministic across runs).
RANDOM_WEIGHTS_SEED = 0
RANDOM_WEIGHTS_WARNING = (
    "features come from an untrained VGG16 (weights: none); results are meaningless except for tests"
)

# Bump when prepare()/embed() change in a way that changes the vectors (feature-cache identity).
VGG16_PREPROCESSING = "vgg16/resize-bilinear/caffe/v1"
RESNET50_PREPROCESSING = "resnet50/resize-bilinear/caffe/v1"
KERAS_MODEL_PREPROCESSING = "keras-model/resize-bilinear/{mode}/v1"
PHASH_PREPROCESSING = "phash/gray-lanczos/dct2-ortho/median/v1"
THUMB_PREPROCESSING = "thumb/trim-borders/gray-box/zero-mean/l2/v1"
COLOR_PREPROCESSING = "color/trim-borders/rgb-box64/hsv-pillow/joint-hist/sqrt/v1"

# features.preprocessing values for keras-model:PATH: keras.applications.imagenet_utils modes, plus "none"
# (the model gets RGB 0..255) and "scale01" (RGB / 255). "auto" = the model's own for vgg16/resnet50, none
# for keras-model.
PREPROCESSING_MODES = ("auto", "none", "scale01", "caffe", "tf", "torch")


class Extractor(Protocol):
    """What the pipeline needs from a feature extractor."""

    name: str  # "vgg16", "phash", ...
    dim: int  # length of each feature vector
    default_threshold: float  # cosine similarity used when cluster.threshold is "auto"
    decode_size: int | None  # side in px the decoder must deliver at least (JPEG draft mode); None = full

    def info(self) -> dict[str, Any]:
        """Identity of the extractor for reports and caches (see the concrete classes for the keys)."""
        ...

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image -> model input. Thread-safe, CPU only, never touches TensorFlow."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Stacked ``prepare`` outputs -> float32 array of shape (n, dim) with L2-normalised rows."""
        ...


ExtractorFactory = Callable[[FeaturesConfig, WarnFn | None], Extractor]


class WeightsUnavailableError(WeightsError):
    """The ImageNet weights could neither be found in the Keras cache nor downloaded.

    Attributes:
        app: the backbone whose weights are missing (for the how-to message), if known.
    """

    def __init__(self, message: str, app: KerasApp | None = None) -> None:
        super().__init__(message)
        self.app = app


def _warn(warn: WarnFn | None, message: str) -> None:
    if warn is not None:
        warn(message)


# --------------------------------------------------------------------------------------------------- phash


class _WeightFree:
    """What the weight-free extractors share: no weights, cheap enough to embed extra views, and the identity
    of an offline fallback (``requested`` is the extractor the user asked for, ``fallback_reason`` why it
    could not be used)."""

    name: str
    weight_free = True

    def __init__(self, requested: str, fallback_reason: str | None) -> None:
        self.requested = requested
        self.fallback_reason = fallback_reason

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


class PHashExtractor(_WeightFree):
    """Weight-free DCT perceptual hash used as a ±1 vector.

    The image is converted to grayscale (ITU-R 601 luma), resized to ``4*hash_size`` square with Pillow's
    LANCZOS filter, transformed with a 2-D DCT (type II, orthonormal) and the low-frequency
    ``hash_size x hash_size`` block is kept; bit = coefficient > median of that block. Bits become +1/-1
    divided by sqrt(bits), so vectors are unit-norm and the cosine similarity of two hashes is exactly
    ``1 - 2 * hamming / bits``.

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
        self.decode_size: int | None = self.image_size

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
            float32 array of shape (n, hash_size**2), entries ±1/hash_size (unit-norm rows).
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
        self.decode_size: int | None = 8 * size

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
        self.decode_size: int | None = 2 * self.image_size

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


# --------------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class KerasApp:
    """What differs between the Keras-applications backbones dedup offers (VGG16, ResNet50).

    Attributes:
        name: extractor name ("vgg16").
        display: name in messages ("VGG16").
        constructor: attribute of ``keras.applications`` building the model ("VGG16").
        module: attribute of ``keras.applications`` holding its ``preprocess_input`` ("vgg16").
        dim: length of the pooled feature vector.
        notop_filename, notop_url, notop_md5: the ImageNet "notop" weights exactly as Keras fetches them.
        default_threshold: cosine similarity used when ``cluster.threshold`` is auto.
        preprocessing: identity of prepare()+embed() for reports and caches.
        top_layers: layer names only a with-top weights file has (for a clearer error).
    """

    name: str
    display: str
    constructor: str
    module: str
    dim: int
    notop_filename: str
    notop_url: str
    notop_md5: str
    default_threshold: float
    preprocessing: str
    top_layers: frozenset[str]


VGG16_APP = KerasApp(
    name="vgg16",
    display="VGG16",
    constructor="VGG16",
    module="vgg16",
    dim=512,
    notop_filename=VGG16_NOTOP_FILENAME,
    notop_url=VGG16_NOTOP_URL,
    notop_md5=VGG16_NOTOP_MD5,
    default_threshold=VGG16_DEFAULT_THRESHOLD,
    preprocessing=VGG16_PREPROCESSING,
    top_layers=frozenset({"fc1", "fc2", "predictions"}),
)

RESNET50_APP = KerasApp(
    name="resnet50",
    display="ResNet50",
    constructor="ResNet50",
    module="resnet50",
    dim=2048,
    notop_filename=RESNET50_NOTOP_FILENAME,
    notop_url=RESNET50_NOTOP_URL,
    notop_md5=RESNET50_NOTOP_MD5,
    default_threshold=RESNET50_DEFAULT_THRESHOLD,
    preprocessing=RESNET50_PREPROCESSING,
    top_layers=frozenset({"predictions", "fc1000"}),
)


def keras_cache_dir() -> Path:
    """The Keras cache root, computed the way Keras does but at call time.

    ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable).
    Keras itself reads ``KERAS_HOME`` only once, when it is imported; dedup passes this directory to
    ``keras.utils.get_file`` explicitly, so the variable is honoured whenever it is set.
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def weights_howto(app: KerasApp = VGG16_APP) -> str:
    """One sentence telling the user how to make ``app``'s ImageNet weights available offline."""
    target = keras_cache_dir() / "models" / app.notop_filename
    return (
        f"to use {app.display}, download {app.notop_url} on a connected machine and pass it with "
        f"--weights FILE (features.weights), or copy it to {target} "
        "(the Keras cache; KERAS_HOME moves it)"
    )


@contextlib.contextmanager
def _quiet_native_stderr(enabled: bool) -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow's native code starts.

    TensorFlow prints start-up lines (absl's "before InitializeLog", oneDNN, CUDA probing) from C++ before
    ``TF_CPP_MIN_LOG_LEVEL`` takes effect; they would drown the one warning a user should read. Python
    exceptions are unaffected. Setting ``TF_CPP_MIN_LOG_LEVEL`` yourself keeps them visible.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_keras(what: str = "the vgg16 extractor") -> Any:
    """Import Keras (and TensorFlow) with TensorFlow's native logging quietened (see above)."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_native_stderr(quiet and "keras" not in sys.modules):
            import keras
    except ImportError as e:
        raise WeightsError(
            f"{what} needs TensorFlow and Keras ({e}); install them with "
            "`pip install tensorflow`, or use the phash extractor"
        ) from e
    return keras


def _keras_get_file(**kwargs: Any) -> str:
    """``keras.utils.get_file``; what it prints (download progress, cache notices) goes to stderr, and
    only when it succeeds, so an offline run shows one warning instead of a failed-download line."""
    keras = _import_keras()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = str(keras.utils.get_file(**kwargs))
    sys.stderr.write(out.getvalue())
    return path


def _origin_reachable(url: str) -> bool:
    """Whether the host of ``url`` resolves (no connection is made); False on a machine without network."""
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def fetch_imagenet_weights(app: KerasApp = VGG16_APP) -> Path:
    """Path of ``app``'s ImageNet "notop" weights, from the Keras cache or downloaded into it.

    Returns:
        path of the cached file (its md5 checked by Keras).

    Raises:
        WeightsUnavailableError: not cached (or cached but corrupt) and the download failed.
    """
    if not _origin_reachable(app.notop_url):
        # Offline: say so at once, without importing TensorFlow (~4 s) only to fail the download, and
        # without letting Keras delete a cached file whose md5 it could not confirm by re-downloading.
        host = urllib.parse.urlparse(app.notop_url).hostname
        raise WeightsUnavailableError(
            f"cannot obtain the ImageNet {app.display} weights (not in the Keras cache, and {host} cannot be "
            "reached)",
            app=app,
        )
    cache = keras_cache_dir()
    with contextlib.suppress(OSError):  # get_file falls back to /tmp/.keras if it cannot write here
        cache.mkdir(parents=True, exist_ok=True)
    try:
        path = _keras_get_file(
            fname=app.notop_filename,
            origin=app.notop_url,
            cache_subdir="models",
            file_hash=app.notop_md5,
            cache_dir=str(cache),
        )
    except Exception as e:  # get_file raises a bare Exception for network failures, ValueError for md5
        reason = " ".join(str(e).replace(f" on {app.notop_url}", "").split()) or type(e).__name__
        raise WeightsUnavailableError(
            f"cannot obtain the ImageNet {app.display} weights ({reason})", app=app
        ) from e
    return Path(path)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_imagenet_weights(app: KerasApp = VGG16_APP) -> Path | None:
    """``app``'s ImageNet "notop" file where Keras caches it, if present and its md5 is right; else None.

    Reads no network and imports no TensorFlow (``keras.utils.get_file`` would import both).
    """
    path = keras_cache_dir() / "models" / app.notop_filename
    try:
        return path if path.is_file() and _md5(path) == app.notop_md5 else None
    except OSError:
        return None


def resolve_weights(spec: str, warn: WarnFn | None = None, app: KerasApp = VGG16_APP) -> Path | None:
    """Turn the ``features.weights`` value into a weights file for ``app``.

    Args:
        spec: "imagenet", "none", or a path to a ``.h5`` (legacy Keras layout, as in the Keras cache) or
            ``.weights.h5`` (Keras 3) file.
        warn: called with a one-line warning for ``none``.
        app: the backbone the weights are for.

    Returns:
        absolute path of the weights file, or None for random initialisation ("none").

    Raises:
        WeightsUnavailableError: "imagenet" and the weights can neither be found nor downloaded.
        WeightsError: the given file does not exist.
    """
    if spec.lower() == "imagenet":
        return fetch_imagenet_weights(app)
    if spec.lower() == "none":
        _warn(warn, RANDOM_WEIGHTS_WARNING.replace("VGG16", app.display))
        return None
    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    return path


def _weights_layout(path: Path) -> tuple[str, list[str]]:
    """Sniff a weights file: ("legacy", layer names) or ("keras3", []); WeightsError if neither."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group: Any = f
            if "layer_names" not in f.attrs and "model_weights" in f:
                group = f["model_weights"]
            if "layer_names" in group.attrs:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
                return "legacy", names
            if "layers" in f:
                return "keras3", []
    except OSError as e:
        raise WeightsError(
            f"{path} is not a Keras weights file (not HDF5; expected the .h5 file of the "
            "Keras cache or a Keras 3 .weights.h5)"
        ) from e
    raise WeightsError(
        f"{path} is an HDF5 file but holds no Keras weights (neither the .h5 layout of the "
        "Keras cache nor a Keras 3 .weights.h5)"
    )


@contextlib.contextmanager
def _with_suffix(path: Path, suffix: str) -> Iterator[Path]:
    """Yield ``path`` under a name ending in ``suffix`` (Keras picks the loader by file name)."""
    with tempfile.TemporaryDirectory(prefix="dedup-weights-") as tmp:
        alias = Path(tmp) / f"weights{suffix}"
        try:
            alias.symlink_to(path)
        except OSError:
            shutil.copyfile(path, alias)
        yield alias


def load_weights_file(model: Any, path: Path, app: KerasApp = VGG16_APP) -> None:
    """Load a without-top weights file into ``model`` (a Keras ``app`` model, include_top=False).

    Both layouts are accepted whatever the file is called: the legacy Keras ``.h5`` layout (that of the
    ImageNet file in the Keras cache; layers matched in order) and Keras 3 ``.weights.h5`` (layers matched
    by name; the classifier layers of a with-top file are ignored).

    Raises:
        WeightsError: missing file, not a Keras weights file, or weights that do not fit the model (the
            message names the file and says what did not fit).
    """
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    layout, layer_names = _weights_layout(path)
    name = path.name.lower()
    if layout == "legacy":
        suffix = ".h5"
        named_ok = name.endswith((".h5", ".hdf5")) and not name.endswith(".weights.h5")
    else:
        suffix = ".weights.h5"
        named_ok = name.endswith(".weights.h5")
    alias = contextlib.nullcontext(path) if named_ok else _with_suffix(path, suffix)
    try:
        with alias as load_path, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns per skipped layer before raising anyway
            model.load_weights(str(load_path))
    except Exception as e:  # a user file can break Keras/h5py in many ways; all mean "does not fit"
        detail = " ".join(str(e).split())[:300].rstrip(".") or type(e).__name__
        hint = ""
        if app.top_layers & set(layer_names):
            hint = (
                f"; it looks like the {app.display} file *with* the classifier top, dedup needs the 'notop' "
                f"file ({app.notop_filename})"
            )
        raise WeightsError(f"{path} does not fit {app.display} without its top: {detail}{hint}") from e


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _init_random(model: Any, seed: int) -> None:
    """Deterministic random weights from a numpy seed, following Keras' default initialisers.

    Kernels (conv and dense) get Glorot-uniform values; every other array keeps the constant Keras gives it
    at construction (zero biases, batch-norm gamma/variance 1 and beta/mean 0), or zeros if not constant.
    """
    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        if w.ndim in (2, 4):  # kernel (kh, kw, c_in, c_out) or (n_in, n_out)
            receptive = w.shape[0] * w.shape[1] if w.ndim == 4 else 1
            fan_in, fan_out = (w.shape[2], w.shape[3]) if w.ndim == 4 else (w.shape[0], w.shape[1])
            limit = np.sqrt(6.0 / (receptive * (fan_in + fan_out)))
            values.append(rng.uniform(-limit, limit, size=w.shape).astype(w.dtype))
        elif w.size and np.all(w == w.flat[0]):
            values.append(w.copy())
        else:
            values.append(np.zeros_like(w))
    model.set_weights(values)


def _resize_rgb(image: Image.Image, width: int, height: int) -> np.ndarray:
    """The whole image (no crop, aspect ratio not kept) resized with BILINEAR: float32 (h, w, 3), 0..255."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


# ----------------------------------------------------------------------------------- keras applications


class KerasAppExtractor:
    """A Keras-applications backbone without its top, global pooling, its own preprocessing.

    ``prepare`` resizes the whole image (no crop, aspect ratio not kept) to ``input_size`` square with
    Pillow's BILINEAR filter (antialiased when shrinking); ``embed`` applies the application's
    ``preprocess_input`` (for VGG16 and ResNet50: RGB->BGR, ImageNet mean subtracted), runs the model and
    L2-normalises the rows. Subclasses only set :attr:`app`.

    ``__init__`` only stores parameters; :meth:`build` resolves and loads the weights.

    Args:
        input_size: side in pixels of the square model input (>= 32).
        pooling: "avg" or "max" global pooling of the last feature map.
        weights: "imagenet", "none" or a path to a weights file (see :func:`resolve_weights`).
    """

    app: KerasApp = VGG16_APP
    weight_free = False
    candidate_threshold = VGG16_CANDIDATE_THRESHOLD  # the same uncalibrated values for every backbone
    sure_threshold = VGG16_SURE_THRESHOLD

    def __init__(
        self,
        input_size: int = 224,
        pooling: str = "avg",
        weights: str = "imagenet",
        precision: str = "float32",
    ) -> None:
        if pooling not in ("avg", "max"):
            raise ConfigError(f"features.pooling: {pooling!r} is not allowed; allowed values: avg, max")
        if input_size < 32:
            raise ConfigError(
                f"features.input_size: {input_size!r} is out of range; allowed values: 32 or more"
            )
        if precision not in ("float32", "bfloat16"):
            raise ConfigError(
                f"features.precision: {precision!r} is not allowed; allowed values: float32, bfloat16"
            )
        self.name = self.app.name
        self.dim = self.app.dim
        self.input_size = input_size
        self.precision = precision
        self.pooling = pooling
        self.weights = weights.lower() if weights.lower() in ("imagenet", "none") else weights
        self.default_threshold = self.app.default_threshold
        self.decode_size: int | None = input_size
        self.model_: Any = None
        self.weights_path_: Path | None = None
        self.resolved_ = False
        self._weights_sha256: str | None = None

    def build(self, warn: WarnFn | None = None) -> KerasAppExtractor:
        """Resolve the weights (before importing TensorFlow when possible), build the model, load them.

        Raises:
            WeightsUnavailableError: "imagenet" cannot be obtained (the caller may fall back).
            WeightsError: the weights file is missing or does not fit.
        """
        return self.resolve(warn).load()

    def resolve(self, warn: WarnFn | None = None) -> KerasAppExtractor:
        """Find and check the weights file without building the model, so :meth:`info` is complete.

        TensorFlow is not imported when the weights are a file, ``none``, or ImageNet weights already in the
        Keras cache (checked against their md5 here); only a missing ImageNet file needs Keras (to download
        it). This is what lets a scan served entirely from the feature cache skip TensorFlow.

        Raises:
            WeightsUnavailableError: "imagenet" cannot be obtained (the caller may fall back).
            WeightsError: the weights file is missing or is not a Keras weights file.
        """
        if self.weights == "imagenet":
            path: Path | None = cached_imagenet_weights(self.app) or fetch_imagenet_weights(self.app)
        else:
            path = resolve_weights(self.weights, warn, self.app)
        if path is not None:
            _weights_layout(path)  # reject garbage before paying for the TensorFlow import
        self.weights_path_ = path
        self.resolved_ = True
        return self

    def load(self) -> KerasAppExtractor:
        """Build the model and load the resolved weights (idempotent; resolves first if needed).

        Raises:
            WeightsError: the weights do not fit.
        """
        if self.model_ is not None:
            return self
        if not self.resolved_:
            self.resolve()
        path = self.weights_path_
        keras = _import_keras(f"the {self.name} extractor")
        side = self.input_size
        constructor = getattr(keras.applications, self.app.constructor)
        previous = keras.config.dtype_policy()
        if self.precision == "bfloat16":  # bf16 compute, float32 variables: the same weight files load
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = constructor(
                include_top=False, weights=None, pooling=self.pooling, input_shape=(side, side, 3)
            )
        finally:
            keras.config.set_dtype_policy(previous)
        if path is None:
            _init_random(model, RANDOM_WEIGHTS_SEED)
        else:
            load_weights_file(model, path, self.app)
        self.model_ = model
        self.weights_path_ = path
        return self

    def info(self) -> dict[str, Any]:
        """Keys: name, weights ("imagenet" | file path | "none"), weights_file, weights_sha256 (computed on
        first call; None for "none"), pooling, input_size, dim, preprocessing, fallback_used (False),
        requested (the name), seed (for "none"), precision ("float32" | "bfloat16")."""
        if self.weights_path_ is not None and self._weights_sha256 is None:
            self._weights_sha256 = _sha256(self.weights_path_)
        weights = self.weights
        if weights not in ("imagenet", "none"):
            weights = str(self.weights_path_ or weights)
        return {
            "name": self.name,
            "weights": weights,
            "weights_file": None if self.weights_path_ is None else str(self.weights_path_),
            "weights_sha256": self._weights_sha256,
            "pooling": self.pooling,
            "input_size": self.input_size,
            "dim": self.dim,
            "preprocessing": self.app.preprocessing,
            "fallback_used": False,
            "requested": self.name,
            "seed": RANDOM_WEIGHTS_SEED if self.weights == "none" else None,
            "precision": self.precision,
        }

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize the whole image to the model input.

        Returns:
            float32 array of shape (input_size, input_size, 3), RGB values 0..255.
        """
        return _resize_rgb(image, self.input_size, self.input_size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a batch of prepared images (the batch itself is not modified).

        Args:
            batch: array of shape (n, input_size, input_size, 3), RGB 0..255.

        Returns:
            float32 array of shape (n, dim), L2-normalised rows.
        """
        if self.model_ is None:
            raise RuntimeError(f"{type(self).__name__}.build() must be called before embed()")
        side = self.input_size
        x = np.array(batch, dtype=np.float32, copy=True)  # preprocess_input works in place
        if x.ndim != 4 or x.shape[1:] != (side, side, 3):
            raise ValueError(f"{self.name} expects a batch of shape (n, {side}, {side}, 3), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        keras = _import_keras()
        x = getattr(keras.applications, self.app.module).preprocess_input(x)
        out = keras.ops.convert_to_numpy(self.model_(x, training=False))
        return l2_normalize(out)


class VGG16Extractor(KerasAppExtractor):
    """Keras VGG16 without its top, global pooling, ImageNet ("caffe") preprocessing; 512-d vectors."""

    app = VGG16_APP


class ResNet50Extractor(KerasAppExtractor):
    """Keras ResNet50 without its top, global pooling, its ImageNet ("caffe") preprocessing; 2048-d."""

    app = RESNET50_APP


# ------------------------------------------------------------------------------------------ keras-model


def preprocess(x: np.ndarray, mode: str) -> np.ndarray:
    """Apply a ``features.preprocessing`` mode to RGB 0..255 pixels (channels last), not in place.

    Modes: ``none`` (unchanged), ``scale01`` (/255), and the ``keras.applications.imagenet_utils`` modes
    ``caffe`` (RGB->BGR, ImageNet mean subtracted), ``tf`` (-1..1), ``torch`` (0..1, ImageNet mean/std).
    """
    x = np.array(x, dtype=np.float32, copy=True)
    if mode in ("none", "auto"):
        return x
    if mode == "scale01":
        return x / np.float32(255.0)
    if mode in ("caffe", "tf", "torch"):
        keras = _import_keras()
        return np.asarray(keras.applications.imagenet_utils.preprocess_input(x, mode=mode), dtype=np.float32)
    raise ConfigError(
        f"features.preprocessing: {mode!r} is not allowed; allowed values: {', '.join(PREPROCESSING_MODES)}"
    )


class KerasModelExtractor:
    """Any saved Keras model (``.keras`` / ``.h5``) used as a feature extractor (``keras-model:PATH``).

    The model's output must be one vector per image, shape (None, dim), or one feature map, shape
    (None, h, w, channels), which is globally pooled with ``pooling``. The input side comes from the
    model's input shape; a model that accepts any size gets ``input_size`` square. Inputs are channels-last
    RGB (or grayscale when the model has one input channel), resized like the built-in backbones, then
    preprocessed with ``preprocessing`` (see :func:`preprocess`; "auto" means "none": the model is expected
    to hold its own rescaling layers).

    Args:
        path: the model file.
        input_size: side used when the model accepts any size.
        pooling: "avg" or "max", for feature-map outputs.
        preprocessing: one of :data:`PREPROCESSING_MODES`.
    """

    name = "keras-model"

    def __init__(
        self, path: str | Path, input_size: int = 224, pooling: str = "avg", preprocessing: str = "auto"
    ) -> None:
        if pooling not in ("avg", "max"):
            raise ConfigError(f"features.pooling: {pooling!r} is not allowed; allowed values: avg, max")
        if preprocessing not in PREPROCESSING_MODES:
            raise ConfigError(
                f"features.preprocessing: {preprocessing!r} is not allowed; allowed values: "
                f"{', '.join(PREPROCESSING_MODES)}"
            )
        self.path = Path(path).expanduser().absolute()
        self.input_size = input_size
        self.pooling = pooling
        self.preprocessing = "none" if preprocessing == "auto" else preprocessing
        self.default_threshold = KERAS_MODEL_DEFAULT_THRESHOLD
        self.dim = 0
        self.decode_size: int | None = input_size
        self.model_: Any = None
        self.input_hw_: tuple[int, int] = (input_size, input_size)
        self.channels_: int = 3
        self.output_rank_: int = 2
        self._sha256: str | None = None

    def build(self, warn: WarnFn | None = None) -> KerasModelExtractor:
        """Load the model and work out its input size, channels and output shape.

        Raises:
            WeightsError: missing file, not a Keras model, more than one input/output, channels-first
                input, or an output that is neither a vector nor a feature map.
        """
        path = self.path
        if not path.exists():
            raise WeightsError(f"keras-model: model file not found: {path}")
        if not path.is_file():
            raise WeightsError(f"keras-model: {path} is not a file")
        if not path.name.lower().endswith((".keras", ".h5", ".hdf5")):
            raise WeightsError(
                f"keras-model: {path} is not a saved Keras model (expected a .keras or .h5 file)"
            )
        keras = _import_keras("the keras-model extractor")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = keras.saving.load_model(str(path), compile=False)
        except Exception as e:  # zip/HDF5/deserialisation errors of a user file
            detail = " ".join(str(e).split())[:300].rstrip(".") or type(e).__name__
            raise WeightsError(f"keras-model: cannot load {path} as a Keras model: {detail}") from e
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise WeightsError(
                f"keras-model: {path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "dedup needs one image input and one output"
            )
        in_shape = tuple(model.inputs[0].shape)
        if len(in_shape) != 4 or in_shape[-1] not in (1, 3):
            raise WeightsError(
                f"keras-model: {path} takes input of shape {in_shape}; dedup needs images "
                "(batch, height, width, 3 or 1 channels), channels last"
            )
        out_shape = tuple(model.outputs[0].shape)
        if len(out_shape) not in (2, 4) or out_shape[-1] is None:
            raise WeightsError(
                f"keras-model: {path} outputs shape {out_shape}, rank {len(out_shape)}; supported outputs "
                "are a vector (batch, dim) or a feature map (batch, height, width, channels), pooled with "
                "features.pooling"
            )
        if in_shape[-1] == 1 and self.preprocessing in ("caffe", "torch"):
            raise ConfigError(
                f"features.preprocessing: {self.preprocessing!r} needs RGB input, but {path} takes one "
                "channel; allowed values for it: none, scale01, tf"
            )
        h, w = in_shape[1], in_shape[2]
        side = self.input_size
        self.input_hw_ = (side if h is None else int(h), side if w is None else int(w))
        self.channels_ = int(in_shape[-1])
        self.output_rank_ = len(out_shape)
        self.dim = int(out_shape[-1])
        self.decode_size = max(self.input_hw_)
        self.model_ = model
        return self

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), model_file, model_sha256, pooling (None for vector outputs),
        input_size ([height, width]), dim, preprocessing, fallback_used (False), requested."""
        if self._sha256 is None and self.path.is_file():
            self._sha256 = _sha256(self.path)
        return {
            "name": self.name,
            "weights": None,
            "model_file": str(self.path),
            "model_sha256": self._sha256,
            "pooling": self.pooling if self.output_rank_ == 4 else None,
            "input_size": list(self.input_hw_),
            "dim": self.dim,
            "preprocessing": KERAS_MODEL_PREPROCESSING.format(mode=self.preprocessing),
            "fallback_used": False,
            "requested": f"{self.name}:{self.path}",
        }

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize the whole image to the model input.

        Returns:
            float32 array of shape (height, width, 3) RGB 0..255, or (height, width, 1) gray.
        """
        h, w = self.input_hw_
        if self.channels_ == 1:
            gray = image.convert("L").resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.float32)[:, :, None]
        return _resize_rgb(image, w, h)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Preprocess, run the model, pool feature maps, L2-normalise.

        Args:
            batch: array of shape (n, height, width, channels), 0..255.

        Returns:
            float32 array of shape (n, dim), L2-normalised rows.
        """
        if self.model_ is None:
            raise RuntimeError("KerasModelExtractor.build() must be called before embed()")
        h, w = self.input_hw_
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (h, w, self.channels_):
            raise ValueError(
                f"keras-model expects a batch of shape (n, {h}, {w}, {self.channels_}), got {x.shape}"
            )
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = preprocess(x, self.preprocessing)
        keras = _import_keras()
        out = np.asarray(keras.ops.convert_to_numpy(self.model_(x, training=False)), dtype=np.float32)
        if out.ndim == 4:
            out = out.mean(axis=(1, 2)) if self.pooling == "avg" else out.max(axis=(1, 2))
        return l2_normalize(out.reshape(len(x), -1))


# --------------------------------------------------------------------------------------------------- registry


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (x86 AVX512_BF16 or AMX-BF16; Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def model_precision(cfg: FeaturesConfig) -> str:
    """``features.precision``, with ``auto`` = bfloat16 on CPUs that compute it natively, else float32."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bfloat16" if cpu_has_bf16() else "float32"


def _make_vgg16(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return VGG16Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg)).build(warn)


def _make_resnet50(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return ResNet50Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg)).build(warn)


def _make_keras_model(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    path = cfg.extractor.partition(":")[2]
    return KerasModelExtractor(path, cfg.input_size, cfg.pooling, cfg.preprocessing).build(warn)


def _make_phash(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return PHashExtractor(cfg.hash_size)


def _make_thumb(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return ThumbExtractor(cfg.thumb_size)


def _make_color(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return ColorExtractor(cfg.color_bins)


EXTRACTORS: dict[str, ExtractorFactory] = {
    "vgg16": _make_vgg16,
    "resnet50": _make_resnet50,
    "keras-model": _make_keras_model,
    "phash": _make_phash,
    "thumb": _make_thumb,
    "color": _make_color,
}

# Registry names that take a parameter after ':' (shown as NAME:PATH in messages).
PARAMETERISED = {"keras-model": "PATH"}


def allowed_extractors() -> str:
    """The allowed ``features.extractor`` values, for messages: "vgg16, resnet50, keras-model:PATH, ..."."""
    return ", ".join(f"{k}:{PARAMETERISED[k]}" if k in PARAMETERISED else k for k in EXTRACTORS)


def _resolve_vgg16(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return VGG16Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg)).resolve(warn)


def _resolve_resnet50(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return ResNet50Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg)).resolve(warn)


# Factories that return an extractor whose info() is complete but whose model is loaded by ensure_loaded();
# extractors without an entry here are built eagerly by their EXTRACTORS factory.
LAZY_EXTRACTORS: dict[str, ExtractorFactory] = {"vgg16": _resolve_vgg16, "resnet50": _resolve_resnet50}


def ensure_loaded(extractor: Extractor) -> None:
    """Load the model of an extractor made with ``make_extractor(..., lazy=True)`` (no-op when loaded)."""
    load = getattr(extractor, "load", None)
    if callable(load):
        load()


def uses_mirror(cfg: FeaturesConfig, extractor: Extractor) -> bool:
    """Whether mirror-image vectors are computed: ``features.mirror``, where ``auto`` means on for the weight-
    free extractors (a second hash or histogram costs next to nothing) and off for CNN extractors (a
    second model pass doubles the cost; ImageNet CNNs are trained with random horizontal flips, so their
    pooled features of a mirror image are close to the original's)."""
    if isinstance(cfg.mirror, bool):
        return cfg.mirror
    return bool(getattr(extractor, "weight_free", False))


def check_extractor_name(name: str, key: str = "features.extractor", *, within: str | None = None) -> str:
    """Validate a ``features.extractor`` value against the registry (no model is loaded).

    Returns:
        ``name`` unchanged.

    Raises:
        ConfigError: unknown name, a parameterised name without its parameter (``keras-model:`` with no
            path), or a parameter given to a name that takes none; the message lists the allowed values.
    """
    base, sep, arg = name.partition(":")
    if base not in EXTRACTORS or (base in PARAMETERISED) != bool(sep and arg.strip()):
        hint = ""
        if base in PARAMETERISED:
            hint = f" ({base} needs a {PARAMETERISED[base]}: {base}:{PARAMETERISED[base]})"
        what = f"{name!r} in {within!r}" if within else repr(name)
        raise ConfigError(
            f"{key}: {what} is not allowed{hint}; allowed values: {allowed_extractors()} "
            "(several may be joined with '+', e.g. phash+thumb+color)"
        )
    return name


def _app_of(extractor: str) -> KerasApp:
    return RESNET50_APP if extractor.partition(":")[0] == "resnet50" else VGG16_APP


# Extractors that need no model weights (allowed as features.offline_fallback).
WEIGHT_FREE = frozenset({"phash", "thumb", "color"})


def split_names(spec: str, key: str = "features.extractor") -> list[str]:
    """``"phash+color"`` -> ``["phash", "color"]``, each part checked by :func:`check_extractor_name`.

    Raises:
        ConfigError: empty or unknown name (the message lists the allowed values), or a name given twice.
    """
    names = [p.strip() for p in spec.split("+")]
    within = spec if len(names) > 1 else None
    parts = [check_extractor_name(name, key, within=within) for name in names]
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{key}: {spec!r} names an extractor twice")
    return parts


def _fallback(cfg: FeaturesConfig, requested: str, reason: str) -> list[Extractor]:
    """The weight-free extractors of ``cfg.offline_fallback``, marked as a fallback for ``requested``."""
    out: list[Extractor] = []
    for name in split_names(cfg.offline_fallback, "features.offline_fallback"):
        if name == "phash":
            out.append(PHashExtractor(cfg.hash_size, requested=requested, fallback_reason=reason))
        elif name == "thumb":
            out.append(ThumbExtractor(cfg.thumb_size, requested=requested, fallback_reason=reason))
        elif name == "color":
            out.append(ColorExtractor(cfg.color_bins, requested=requested, fallback_reason=reason))
        else:
            raise ConfigError(
                f"features.offline_fallback: {name!r} is not weight-free; allowed values: none, "
                f"{', '.join(sorted(WEIGHT_FREE))} (joined with '+')"
            )
    return out


def make_extractors(
    cfg: FeaturesConfig, warn: WarnFn | None = None, *, lazy: bool = False
) -> list[Extractor]:
    """Build every extractor of ``cfg.extractor`` (names joined with '+'), ready to embed.

    With ``lazy``, weights are resolved and checked now (so the offline fallback is decided here and
    ``info()`` is complete) but CNN models are only built by :func:`ensure_loaded`: a scan whose features
    all come from the cache never imports TensorFlow.

    An extractor whose ImageNet weights cannot be obtained is replaced by the weight-free extractors of
    ``cfg.offline_fallback`` (after one warning through ``warn``), leaving out any already in the list; with
    ``offline_fallback: none`` that is an error saying how to supply the weights file.

    Returns:
        the extractors, in the order given (the first one's similarity is the one reported).

    Raises:
        ConfigError: unknown extractor name.
        WeightsError: weights missing / unusable, or ImageNet unavailable with ``offline_fallback: none``.
    """
    out: list[Extractor] = []
    for name in split_names(cfg.extractor):
        key = name.partition(":")[0]
        factory = LAZY_EXTRACTORS.get(key, EXTRACTORS[key]) if lazy else EXTRACTORS[key]
        try:
            out.append(factory(cfg, warn))
        except WeightsUnavailableError as e:
            howto = weights_howto(e.app or _app_of(name))
            if cfg.offline_fallback == "none":
                raise WeightsUnavailableError(f"{e}; {howto}", app=e.app) from e
            names = cfg.offline_fallback
            _warn(
                warn,
                f"{e}; using the weight-free {names} extractor{'s' if '+' in names else ''} instead "
                f"(features.offline_fallback). {howto[0].upper()}{howto[1:]}",
            )
            out.extend(_fallback(cfg, name, str(e)))
    unique: dict[str, Extractor] = {}
    for ex in out:  # one per name; one the user asked for wins over the same one brought in as a fallback
        if ex.name not in unique or unique[ex.name].info().get("fallback_used"):
            unique[ex.name] = ex
    return list(unique.values())


def make_extractor(cfg: FeaturesConfig, warn: WarnFn | None = None, *, lazy: bool = False) -> Extractor:
    """Build the one configured extractor, ready to embed (weights resolved and loaded now unless ``lazy``).

    Same as :func:`make_extractors` for a configuration that yields exactly one extractor (a single name,
    and a single-extractor ``offline_fallback`` if the weights are unavailable).

    Raises:
        ConfigError: unknown extractor name, or the configuration yields several extractors.
        WeightsError: weights missing / unusable, or ImageNet unavailable with ``offline_fallback: none``
            (the message says how to supply the weights file).
    """
    extractors = make_extractors(cfg, warn, lazy=lazy)
    if len(extractors) != 1:
        names = "+".join(e.name for e in extractors)
        raise ConfigError(f"features.extractor: {names} are several extractors; use make_extractors()")
    return extractors[0]
