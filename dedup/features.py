"""Feature extractors: one decoded image in, one L2-normalised vector out.

Every extractor follows the small :class:`Extractor` protocol; :data:`EXTRACTORS` maps a name (the
``features.extractor`` config value, or the part before ``:`` for parameterised names such as a future
``keras-model:PATH``) to a factory, so new extractors plug in without touching the pipeline.

* ``vgg16``: Keras VGG16 without its classifier top, global ``avg``/``max`` pooling, ImageNet ("caffe")
  preprocessing; 512-d vectors. Weights: ``imagenet`` (Keras' cache / download), a weights file, or ``none``.
* ``phash``: a weight-free DCT perceptual hash (``hash_size**2`` bits) as a ±1 vector.

TensorFlow/Keras is imported lazily inside the VGG16 code, so ``import dedup.features`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from scipy import fft

from dedup.config import FeaturesConfig
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

# Seed of the random VGG16 weights used with ``weights: none`` (deterministic across runs).
RANDOM_WEIGHTS_SEED = 0
RANDOM_WEIGHTS_WARNING = (
    "features come from an untrained VGG16 (weights: none); results are meaningless except for tests"
)

# Bump when prepare()/embed() change in a way that changes the vectors (feature-cache identity).
VGG16_PREPROCESSING = "vgg16/resize-bilinear/caffe/v1"
PHASH_PREPROCESSING = "phash/gray-lanczos/dct2-ortho/median/v1"


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
    """The ImageNet weights could neither be found in the Keras cache nor downloaded."""


def _warn(warn: WarnFn | None, message: str) -> None:
    if warn is not None:
        warn(message)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Args:
        vectors: array of shape (n, dim).

    Returns:
        float32 array of shape (n, dim); rows of norm 0 stay all-zero instead of becoming NaN.
    """
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


# --------------------------------------------------------------------------------------------------- phash


class PHashExtractor:
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

    def __init__(
        self, hash_size: int = 16, *, requested: str = "phash", fallback_reason: str | None = None
    ) -> None:
        if hash_size < 2:
            raise ConfigError(f"features.hash_size: {hash_size!r} is too small; allowed values: 2 or more")
        self.hash_size = hash_size
        self.requested = requested
        self.fallback_reason = fallback_reason
        self.dim = hash_size * hash_size
        self.default_threshold = PHASH_DEFAULT_THRESHOLD
        self.image_size = 4 * hash_size
        # Twice the working size: JPEG draft decoding stays well above it, so the LANCZOS resize still
        # sees enough pixels and the hash hardly depends on the draft scale.
        self.decode_size: int | None = 2 * self.image_size

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), pooling (None), input_size, dim, hash_size, preprocessing,
        fallback_used, requested, fallback_reason."""
        return {
            "name": self.name,
            "weights": None,
            "pooling": None,
            "input_size": self.image_size,
            "dim": self.dim,
            "hash_size": self.hash_size,
            "preprocessing": PHASH_PREPROCESSING,
            "fallback_used": self.requested != self.name,
            "requested": self.requested,
            "fallback_reason": self.fallback_reason,
        }

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


# --------------------------------------------------------------------------------------------------- weights


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


def weights_howto() -> str:
    """One sentence telling the user how to make the ImageNet weights available offline."""
    target = keras_cache_dir() / "models" / VGG16_NOTOP_FILENAME
    return (
        f"to use VGG16, download {VGG16_NOTOP_URL} on a connected machine and pass it with "
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


def _import_keras() -> Any:
    """Import Keras (and TensorFlow) with TensorFlow's native logging quietened (see above)."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_native_stderr(quiet and "keras" not in sys.modules):
            import keras
    except ImportError as e:
        raise WeightsError(
            f"the vgg16 extractor needs TensorFlow and Keras ({e}); install them with "
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


def fetch_imagenet_weights() -> Path:
    """Path of the ImageNet VGG16 "notop" weights, from the Keras cache or downloaded into it.

    Returns:
        path of the cached file (its md5 checked by Keras).

    Raises:
        WeightsUnavailableError: not cached (or cached but corrupt) and the download failed.
    """
    cache = keras_cache_dir()
    with contextlib.suppress(OSError):  # get_file falls back to /tmp/.keras if it cannot write here
        cache.mkdir(parents=True, exist_ok=True)
    try:
        path = _keras_get_file(
            fname=VGG16_NOTOP_FILENAME,
            origin=VGG16_NOTOP_URL,
            cache_subdir="models",
            file_hash=VGG16_NOTOP_MD5,
            cache_dir=str(cache),
        )
    except Exception as e:  # get_file raises a bare Exception for network failures, ValueError for md5
        reason = " ".join(str(e).replace(f" on {VGG16_NOTOP_URL}", "").split()) or type(e).__name__
        raise WeightsUnavailableError(f"cannot obtain the ImageNet VGG16 weights ({reason})") from e
    return Path(path)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_imagenet_weights() -> Path | None:
    """The ImageNet "notop" file where Keras caches it, if present and its md5 is right; else None.

    Reads no network and imports no TensorFlow (``keras.utils.get_file`` would import both).
    """
    path = keras_cache_dir() / "models" / VGG16_NOTOP_FILENAME
    try:
        return path if path.is_file() and _md5(path) == VGG16_NOTOP_MD5 else None
    except OSError:
        return None


def resolve_weights(spec: str, warn: WarnFn | None = None) -> Path | None:
    """Turn the ``features.weights`` value into a weights file.

    Args:
        spec: "imagenet", "none", or a path to a ``.h5`` (legacy Keras layout, as in the Keras cache) or
            ``.weights.h5`` (Keras 3) file.
        warn: called with a one-line warning for ``none``.

    Returns:
        absolute path of the weights file, or None for random initialisation ("none").

    Raises:
        WeightsUnavailableError: "imagenet" and the weights can neither be found nor downloaded.
        WeightsError: the given file does not exist.
    """
    if spec.lower() == "imagenet":
        return fetch_imagenet_weights()
    if spec.lower() == "none":
        _warn(warn, RANDOM_WEIGHTS_WARNING)
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


def load_weights_file(model: Any, path: Path) -> None:
    """Load a VGG16-without-top weights file into ``model`` (a Keras VGG16, include_top=False).

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
        if {"fc1", "fc2", "predictions"} & set(layer_names):
            hint = (
                f"; it looks like the VGG16 file *with* the classifier top, dedup needs the 'notop' file "
                f"({VGG16_NOTOP_FILENAME})"
            )
        raise WeightsError(f"{path} does not fit VGG16 without its top: {detail}{hint}") from e


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _init_random(model: Any, seed: int) -> None:
    """Deterministic Glorot-uniform kernels and zero biases (Keras' defaults), from a numpy seed."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        if w.ndim == 4:  # conv kernel (kh, kw, c_in, c_out)
            receptive = w.shape[0] * w.shape[1]
            limit = np.sqrt(6.0 / (receptive * (w.shape[2] + w.shape[3])))
            values.append(rng.uniform(-limit, limit, size=w.shape).astype(w.dtype))
        else:
            values.append(np.zeros_like(w))
    model.set_weights(values)


# --------------------------------------------------------------------------------------------------- vgg16


class VGG16Extractor:
    """Keras VGG16 without its top, global pooling, ImageNet ("caffe") preprocessing; 512-d vectors.

    ``prepare`` resizes the whole image (no crop, aspect ratio not kept) to ``input_size`` square with
    Pillow's BILINEAR filter (antialiased when shrinking); ``embed`` applies
    ``keras.applications.vgg16.preprocess_input`` (RGB->BGR, ImageNet mean subtracted), runs the model and
    L2-normalises the rows.

    ``__init__`` only stores parameters; :meth:`build` resolves and loads the weights.

    Args:
        input_size: side in pixels of the square model input (>= 32).
        pooling: "avg" or "max" global pooling of the last feature map.
        weights: "imagenet", "none" or a path to a weights file (see :func:`resolve_weights`).
    """

    name = "vgg16"
    dim = 512

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
        self.input_size = input_size
        self.precision = precision
        self.pooling = pooling
        self.weights = weights.lower() if weights.lower() in ("imagenet", "none") else weights
        self.default_threshold = VGG16_DEFAULT_THRESHOLD
        self.decode_size: int | None = input_size
        self.model_: Any = None
        self.weights_path_: Path | None = None
        self.resolved_ = False
        self._weights_sha256: str | None = None

    def build(self, warn: WarnFn | None = None) -> VGG16Extractor:
        """Resolve the weights (before importing TensorFlow when possible), build the model, load them.

        Raises:
            WeightsUnavailableError: "imagenet" cannot be obtained (the caller may fall back).
            WeightsError: the weights file is missing or does not fit.
        """
        return self.resolve(warn).load()

    def resolve(self, warn: WarnFn | None = None) -> VGG16Extractor:
        """Find and check the weights file without building the model, so :meth:`info` is complete.

        TensorFlow is not imported when the weights are a file, ``none``, or ImageNet weights already in the
        Keras cache (checked against their md5 here); only a missing ImageNet file needs Keras (to download
        it). This is what lets a scan served entirely from the feature cache skip TensorFlow.

        Raises:
            WeightsUnavailableError: "imagenet" cannot be obtained (the caller may fall back).
            WeightsError: the weights file is missing or is not a Keras weights file.
        """
        if self.weights == "imagenet":
            path: Path | None = cached_imagenet_weights() or fetch_imagenet_weights()
        else:
            path = resolve_weights(self.weights, warn)
        if path is not None:
            _weights_layout(path)  # reject garbage before paying for the TensorFlow import
        self.weights_path_ = path
        self.resolved_ = True
        return self

    def load(self) -> VGG16Extractor:
        """Build the model and load the resolved weights (idempotent; resolves first if needed).

        Raises:
            WeightsError: the weights do not fit.
        """
        if self.model_ is not None:
            return self
        if not self.resolved_:
            self.resolve()
        path = self.weights_path_
        keras = _import_keras()
        side = self.input_size
        previous = keras.config.dtype_policy()
        if self.precision == "bfloat16":  # bf16 compute, float32 variables: the same weight files load
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = keras.applications.VGG16(
                include_top=False, weights=None, pooling=self.pooling, input_shape=(side, side, 3)
            )
        finally:
            keras.config.set_dtype_policy(previous)
        if path is None:
            _init_random(model, RANDOM_WEIGHTS_SEED)
        else:
            load_weights_file(model, path)
        self.model_ = model
        self.weights_path_ = path
        return self

    def info(self) -> dict[str, Any]:
        """Keys: name, weights ("imagenet" | file path | "none"), weights_file, weights_sha256 (computed on
        first call; None for "none"), pooling, input_size, dim, preprocessing, fallback_used (False),
        requested ("vgg16"), seed (for "none"), precision ("float32" | "bfloat16")."""
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
            "preprocessing": VGG16_PREPROCESSING,
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
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        side = self.input_size
        resized = rgb.resize((side, side), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Run VGG16 on a batch of prepared images (the batch itself is not modified).

        Args:
            batch: array of shape (n, input_size, input_size, 3), RGB 0..255.

        Returns:
            float32 array of shape (n, 512), L2-normalised rows.
        """
        if self.model_ is None:
            raise RuntimeError("VGG16Extractor.build() must be called before embed()")
        side = self.input_size
        x = np.array(batch, dtype=np.float32, copy=True)  # preprocess_input works in place
        if x.ndim != 4 or x.shape[1:] != (side, side, 3):
            raise ValueError(f"vgg16 expects a batch of shape (n, {side}, {side}, 3), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        keras = _import_keras()
        x = keras.applications.vgg16.preprocess_input(x)
        out = keras.ops.convert_to_numpy(self.model_(x, training=False))
        return l2_normalize(out)


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


def _make_phash(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return PHashExtractor(cfg.hash_size)


EXTRACTORS: dict[str, ExtractorFactory] = {
    "vgg16": _make_vgg16,
    "phash": _make_phash,
}


def _resolve_vgg16(cfg: FeaturesConfig, warn: WarnFn | None) -> Extractor:
    return VGG16Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg)).resolve(warn)


# Factories that return an extractor whose info() is complete but whose model is loaded by ensure_loaded();
# extractors without an entry here are built eagerly by their EXTRACTORS factory.
LAZY_EXTRACTORS: dict[str, ExtractorFactory] = {"vgg16": _resolve_vgg16}


def ensure_loaded(extractor: Extractor) -> None:
    """Load the model of an extractor made with ``make_extractor(..., lazy=True)`` (no-op when loaded)."""
    load = getattr(extractor, "load", None)
    if callable(load):
        load()


def uses_mirror(cfg: FeaturesConfig, extractor: Extractor) -> bool:
    """Whether mirror-image vectors are computed: ``features.mirror``, where ``auto`` means on for the
    weight-free hash (a second hash costs next to nothing) and off for CNN extractors (a second model pass
    doubles the cost; ImageNet CNNs are trained with random horizontal flips, so their pooled features of a
    mirror image are close to the original's)."""
    if isinstance(cfg.mirror, bool):
        return cfg.mirror
    return extractor.name == "phash"


def make_extractor(cfg: FeaturesConfig, warn: WarnFn | None = None, *, lazy: bool = False) -> Extractor:
    """Build the configured extractor, ready to embed (weights resolved and loaded now, not lazily).

    With ``lazy``, weights are resolved and checked now (so the offline fallback is decided here and
    ``info()`` is complete) but the model is only built by :func:`ensure_loaded`: a scan whose features all
    come from the cache never imports TensorFlow.

    If the ImageNet weights cannot be obtained and ``cfg.offline_fallback`` is "phash", ``warn`` is called
    once with one line (what failed, that phash is used, how to supply the weights) and a
    :class:`PHashExtractor` whose ``info()["fallback_used"]`` is True is returned.

    Args:
        cfg: the ``features`` section of the configuration.
        warn: receives one-line warnings meant for the user (the CLI prints them to stderr).

    Raises:
        ConfigError: unknown extractor name.
        WeightsError: weights missing / unusable, or ImageNet unavailable with ``offline_fallback: none``
            (the message says how to supply the weights file).
    """
    key = cfg.extractor.partition(":")[0]
    factory = EXTRACTORS.get(key)
    if factory is None:
        raise ConfigError(
            f"features.extractor: {cfg.extractor!r} is not allowed; allowed values: "
            f"{', '.join(sorted(EXTRACTORS))}"
        )
    if lazy:
        factory = LAZY_EXTRACTORS.get(key, factory)
    try:
        return factory(cfg, warn)
    except WeightsUnavailableError as e:
        if cfg.offline_fallback != "phash":
            raise WeightsUnavailableError(f"{e}; {weights_howto()}") from e
        howto = weights_howto()
        _warn(
            warn,
            f"{e}; using the weight-free phash extractor instead (features.offline_fallback). "
            f"{howto[0].upper()}{howto[1:]}",
        )
        return PHashExtractor(cfg.hash_size, requested=cfg.extractor, fallback_reason=str(e))
