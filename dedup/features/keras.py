"""The Keras extractors: Keras applications (``vgg16``, ``resnet50``, ``mobilenet``, ``mobilenet_v2``,
``efficientnet_b0``) and ``keras-model:PATH``.

The backbones are one :class:`KerasAppExtractor` parameterised by a :class:`KerasApp` (constructor,
weights file name / URL / md5, preprocessing, default threshold); ``keras-model:PATH`` is any saved Keras
model (:class:`KerasModelExtractor`). TensorFlow/Keras is imported inside the methods that run a model, so
importing this module stays fast; the weights files are found and loaded by :mod:`dedup.features.weights`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dedup.embeddings import l2_normalize
from dedup.errors import ConfigError, WeightsError
from dedup.features.weights import (
    RESNET50_NOTOP_FILENAME,
    RESNET50_NOTOP_MD5,
    RESNET50_NOTOP_URL,
    VGG16_NOTOP_FILENAME,
    VGG16_NOTOP_MD5,
    VGG16_NOTOP_URL,
    cached_imagenet_weights,
    fetch_imagenet_weights,
    file_hash,
    import_keras,
    load_weights_file,
    resolve_weights,
    weights_layout,
)

if TYPE_CHECKING:
    from dedup.config import FeaturesConfig
    from dedup.features.names import WarnFn

# Cosine similarity at or above which two VGG16 (global-average-pooled, ImageNet) vectors are called
# duplicates. 0.90 is the customary threshold for VGG16-GAP near-duplicate search; it could not be
# calibrated here because the ImageNet weights cannot be downloaded offline.
VGG16_DEFAULT_THRESHOLD = 0.90

# ResNet50 (global-average-pooled, ImageNet) vectors: the same customary 0.90, equally uncalibrated offline.
RESNET50_DEFAULT_THRESHOLD = 0.90

# A user's own Keras model: nothing is known about its vectors; 0.90 is a starting point, set --threshold.
KERAS_MODEL_DEFAULT_THRESHOLD = 0.90

# Loose "candidate" and "sure" thresholds of the verify stage (dedup.verify) for every backbone, used only
# when calibration (dedup.calibrate, the default for CNNs) is not possible (fewer than 3 images): an
# uncalibrated CNN similarity is no proof of a copy, so then no CNN pair skips the keypoint check.
VGG16_CANDIDATE_THRESHOLD = 0.80
CNN_UNCALIBRATED_SURE = 1.01  # above any cosine similarity: every CNN candidate is verified
VGG16_SURE_THRESHOLD = CNN_UNCALIBRATED_SURE

# Seed of the random weights used with ``weights: none`` (deterministic across runs).
RANDOM_WEIGHTS_SEED = 0

# Bump when prepare()/embed() change in a way that changes the vectors (feature-cache identity).
VGG16_PREPROCESSING = "vgg16/resize-bilinear/caffe/v1"
RESNET50_PREPROCESSING = "resnet50/resize-bilinear/caffe/v1"
MOBILENET_PREPROCESSING = "mobilenet/resize-bilinear/tf/v1"
MOBILENET_V2_PREPROCESSING = "mobilenet_v2/resize-bilinear/tf/v1"
EFFICIENTNET_B0_PREPROCESSING = "efficientnet_b0/resize-bilinear/in-model-rescaling/v1"
KERAS_MODEL_PREPROCESSING = "keras-model/resize-bilinear/{mode}/v1"

# features.preprocessing values for keras-model:PATH: keras.applications.imagenet_utils modes, plus "none"
# (the model gets RGB 0..255) and "scale01" (RGB / 255). "auto" = the model's own for vgg16/resnet50, none
# for keras-model.
PREPROCESSING_MODES = ("auto", "none", "scale01", "caffe", "tf", "torch")


# ------------------------------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class KerasApp:
    """What differs between the Keras-applications backbones dedup offers.

    Attributes:
        name: extractor name ("vgg16").
        display: name in messages ("VGG16").
        constructor: attribute of ``keras.applications`` building the model ("VGG16").
        module: attribute of ``keras.applications`` holding its ``preprocess_input`` ("vgg16").
        dim: length of the pooled feature vector.
        notop_filename, notop_url, notop_md5: the ImageNet "notop" weights exactly as Keras fetches them
            (md5 None: Keras publishes none, any cached file of that name is used). For the MobileNets the
            name and URL are templates with ``{alpha}`` (Keras' spelling of alpha in the name) and
            ``{side}``, filled in by :meth:`sized`.
        default_threshold: cosine similarity used when ``cluster.threshold`` is auto.
        preprocessing: identity of prepare()+embed() for reports and caches.
        top_layers: layer names only a with-top weights file has (for a clearer error).
        alphas: width multipliers Keras has ImageNet weights for (MobileNets); () = the backbone has none.
        sure_threshold: "sure" threshold of the verify stage when not calibrated.
        alpha_spelling: how Keras writes alpha in the weights file name ("v1": 0.25 -> "2_5", "v2": "0.35").
        sides: input sides Keras has ImageNet weights for (MobileNets); () = any.
    """

    name: str
    display: str
    constructor: str
    module: str
    dim: int
    notop_filename: str
    notop_url: str
    notop_md5: str | None
    default_threshold: float
    preprocessing: str
    top_layers: frozenset[str]
    alphas: tuple[float, ...] = ()
    sure_threshold: float = VGG16_SURE_THRESHOLD
    alpha_spelling: str = ""
    sides: tuple[int, ...] = ()

    def sized(self, alpha: float, side: int) -> KerasApp:
        """This backbone at width ``alpha`` and input ``side``: the weights file name and URL filled in
        (Keras has ImageNet MobileNet weights only for the sides in :attr:`sides`; others use the
        nearest, as the notop convolutions do not depend on the input size)."""
        if not self.alphas:
            return self
        near = min(self.sides, key=lambda s: (abs(s - side), s)) if self.sides else side
        spelled = _V1_ALPHA[alpha] if self.alpha_spelling == "v1" else str(float(alpha))
        filename = self.notop_filename.format(alpha=spelled, side=near)
        return replace(
            self,
            display=f"{self.display} (alpha {alpha:g})",
            notop_filename=filename,
            notop_url=self.notop_url.format(alpha=spelled, side=near),
        )


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


# How Keras spells MobileNet v1's alpha in its weights file names.
_V1_ALPHA = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}

MOBILENET_APP = KerasApp(
    name="mobilenet",
    display="MobileNet",
    constructor="MobileNet",
    module="mobilenet",
    dim=1024,  # x alpha
    notop_filename="mobilenet_{alpha}_{side}_tf_no_top.h5",
    notop_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
    "mobilenet_{alpha}_{side}_tf_no_top.h5",
    notop_md5=None,
    default_threshold=VGG16_DEFAULT_THRESHOLD,
    preprocessing=MOBILENET_PREPROCESSING,
    top_layers=frozenset({"conv_preds", "predictions", "reshape_2"}),
    alphas=(0.25, 0.5, 0.75, 1.0),
    sure_threshold=CNN_UNCALIBRATED_SURE,
    alpha_spelling="v1",
    sides=(128, 160, 192, 224),
)

MOBILENET_V2_APP = KerasApp(
    name="mobilenet_v2",
    display="MobileNetV2",
    constructor="MobileNetV2",
    module="mobilenet_v2",
    dim=1280,  # x max(1, alpha)
    notop_filename="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{side}_no_top.h5",
    notop_url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{side}_no_top.h5",
    notop_md5=None,
    default_threshold=VGG16_DEFAULT_THRESHOLD,
    preprocessing=MOBILENET_V2_PREPROCESSING,
    top_layers=frozenset({"predictions", "Logits"}),
    alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    sure_threshold=CNN_UNCALIBRATED_SURE,
    alpha_spelling="v2",
    sides=(96, 128, 160, 192, 224),
)

EFFICIENTNET_B0_APP = KerasApp(
    name="efficientnet_b0",
    display="EfficientNetB0",
    constructor="EfficientNetB0",
    module="efficientnet",
    dim=1280,
    notop_filename="efficientnetb0_notop.h5",
    notop_url="https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
    notop_md5="50bc09e76180e00e4465e1a485ddc09d",
    default_threshold=VGG16_DEFAULT_THRESHOLD,
    preprocessing=EFFICIENTNET_B0_PREPROCESSING,
    top_layers=frozenset({"predictions", "top_dropout"}),
    sure_threshold=CNN_UNCALIBRATED_SURE,
)

# The ImageNet statistics EfficientNet's own Rescaling/Normalization layers use (keras.src.applications.
# efficientnet IMAGENET_STDDEV_RGB; the mean is the Normalization layer's, stored with the weights).
_EFFICIENTNET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_EFFICIENTNET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def alpha_from_filename(path: Path | None, app: KerasApp) -> float | None:
    """The MobileNet width multiplier a weights file's name states, in Keras' spelling
    ("mobilenet_2_5_224_tf_no_top.h5" -> 0.25, "..._kernels_0.35_224_no_top.h5" -> 0.35); None if it
    states none that ``app`` has."""
    if path is None or not app.alphas:
        return None
    name = path.name.lower()
    if app.alpha_spelling == "v1":
        m = re.search(r"mobilenet_(\d_\d)_\d+", name)
        value = None if m is None else {v: k for k, v in _V1_ALPHA.items()}.get(m.group(1))
    else:
        m = re.search(r"_(\d+\.\d+)_\d+(?:_no_top)?\.h5$", name)
        value = None if m is None else float(m.group(1))
    return value if value is not None and value in app.alphas else None


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
    orientation_invariant = False
    candidate_threshold = VGG16_CANDIDATE_THRESHOLD  # the same uncalibrated value for every backbone

    def __init__(
        self,
        input_size: int = 224,
        pooling: str = "avg",
        weights: str = "imagenet",
        precision: str = "float32",
        alpha: float | str = "auto",
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
        if alpha != "auto" and not self.app.alphas:
            raise ConfigError(f"features.alpha: {self.app.name} has no width multiplier; leave it at auto")
        if alpha != "auto" and float(alpha) not in self.app.alphas:
            raise ConfigError(
                f"features.alpha: {alpha!r} is not allowed for {self.app.name}; allowed values: auto, "
                f"{', '.join(f'{a:g}' for a in self.app.alphas)}"
            )
        self.alpha = alpha
        self.name = self.app.name
        self.dim = self.app.dim
        self.sure_threshold = self.app.sure_threshold
        self.input_size = input_size
        self.precision = precision
        self.pooling = pooling
        self.weights = weights.lower() if weights.lower() in ("imagenet", "none") else weights
        self.default_threshold = self.app.default_threshold
        self.decode_size: int | None = input_size
        self.model_: Any = None
        self.weights_path_: Path | None = None
        self.alpha_: float | None = None
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
        if self.app.alphas:  # the MobileNets: alpha from features.alpha, the weights file name, or 1.0
            named = None
            if self.weights not in ("imagenet", "none"):
                named = alpha_from_filename(Path(self.weights).expanduser(), self.app)
            alpha = float(self.alpha) if self.alpha != "auto" else (named or 1.0)
            self.app = self.app.sized(alpha, self.input_size)
            self.alpha_ = alpha
            self.dim = _mobilenet_dim(self.name, alpha)
        if self.weights == "imagenet":
            path: Path | None = cached_imagenet_weights(self.app) or fetch_imagenet_weights(self.app, warn)
        else:
            path = resolve_weights(self.weights, self.app, warn)
        if path is not None:
            weights_layout(path)  # reject garbage before paying for the TensorFlow import
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
        keras = import_keras(f"the {self.name} extractor")
        side = self.input_size
        constructor = getattr(keras.applications, self.app.constructor)
        previous = keras.config.dtype_policy()
        if self.precision == "bfloat16":  # bf16 compute, float32 variables: the same weight files load
            keras.config.set_dtype_policy("mixed_bfloat16")
        extra = {} if self.alpha_ is None else {"alpha": self.alpha_}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MobileNet's "input size not in 128..224" notice
                model = constructor(
                    include_top=False,
                    weights=None,
                    pooling=self.pooling,
                    input_shape=(side, side, 3),
                    **extra,
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
        requested (the name), seed (for "none"), precision ("float32" | "bfloat16"), and for the MobileNets
        alpha."""
        if self.weights_path_ is not None and self._weights_sha256 is None:
            self._weights_sha256 = file_hash(self.weights_path_, "sha256")
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
            **({} if self.alpha_ is None else {"alpha": self.alpha_}),
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
        keras = import_keras()
        x = getattr(keras.applications, self.app.module).preprocess_input(x)
        if self.app.name == EFFICIENTNET_B0_APP.name and self.weights_path_ is not None:
            x = _efficientnet_imagenet_scale(x)
        out = keras.ops.convert_to_numpy(self.model_(x, training=False))
        return l2_normalize(out)


class VGG16Extractor(KerasAppExtractor):
    """Keras VGG16 without its top, global pooling, ImageNet ("caffe") preprocessing; 512-d vectors."""

    app = VGG16_APP


class ResNet50Extractor(KerasAppExtractor):
    """Keras ResNet50 without its top, global pooling, its ImageNet ("caffe") preprocessing; 2048-d."""

    app = RESNET50_APP


class MobileNetExtractor(KerasAppExtractor):
    """Keras MobileNet v1 without its top, global pooling, "tf" preprocessing (-1..1); 1024 x alpha dims.

    ``alpha`` (width multiplier: 0.25, 0.5, 0.75, 1.0) is ``features.alpha``, or with ``auto`` the one the
    weights file name states (Keras' ``mobilenet_2_5_224_tf_no_top.h5`` is 0.25), else 1.0."""

    app = MOBILENET_APP


class MobileNetV2Extractor(KerasAppExtractor):
    """Keras MobileNetV2 without its top, global pooling, "tf" preprocessing (-1..1); 1280-d (alpha 1.3
    and 1.4 wider). ``alpha`` as for :class:`MobileNetExtractor` (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)."""

    app = MOBILENET_V2_APP


class EfficientNetB0Extractor(KerasAppExtractor):
    """Keras EfficientNetB0 without its top, global pooling; 1280-d. The model rescales its own input
    (RGB 0..255 in); with ImageNet weights the extra per-channel scaling Keras adds for them is applied
    here, since the model is built without them and the weights loaded after."""

    app = EFFICIENTNET_B0_APP


def _mobilenet_dim(name: str, alpha: float) -> int:
    """Length of the pooled vector of a MobileNet of width ``alpha`` (Keras' layer sizes)."""
    if name == "mobilenet":
        return int(1024 * alpha)
    if alpha <= 1.0:
        return 1280
    wide = 1280 * alpha  # keras.src.applications.mobilenet_v2._make_divisible(1280 * alpha, 8)
    return max(8, int(wide + 4) // 8 * 8) + (8 if max(8, int(wide + 4) // 8 * 8) < 0.9 * wide else 0)


def _efficientnet_imagenet_scale(x: np.ndarray) -> np.ndarray:
    """RGB 0..255 such that EfficientNet's own ``(x / 255 - mean) / std`` becomes the
    ``(x / 255 - mean) / std / sqrt(std)`` that Keras' ImageNet EfficientNet computes (its extra Rescaling
    layer, built only with ``weights="imagenet"``)."""
    mean = 255.0 * _EFFICIENTNET_MEAN
    return np.asarray(mean + (x - mean) / np.sqrt(_EFFICIENTNET_STD), dtype=np.float32)


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
        keras = import_keras()
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
    weight_free = False
    orientation_invariant = False
    # nothing is known about the model's vectors: verification uses the plain threshold
    candidate_threshold = KERAS_MODEL_DEFAULT_THRESHOLD
    sure_threshold = KERAS_MODEL_DEFAULT_THRESHOLD

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
        keras = import_keras("the keras-model extractor")
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
        if self.preprocessing == "none" and warn is not None and not _has_rescaling(model):
            warn(
                f"keras-model: {path.name} has no rescaling layer and features.preprocessing is none, so it "
                "gets RGB 0..255; most ImageNet models expect tf (-1..1), torch or caffe input (a MobileNet "
                "fed 0..255 finds almost only false pairs): set features.preprocessing (--config)"
            )
        return self

    def load(self) -> KerasModelExtractor:
        """:meth:`build`, unless the model is loaded already (the registry builds it eagerly)."""
        return self if self.model_ is not None else self.build()

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), model_file, model_sha256, pooling (None for vector outputs),
        input_size ([height, width]), dim, preprocessing, fallback_used (False), requested."""
        if self._sha256 is None and self.path.is_file():
            self._sha256 = file_hash(self.path, "sha256")
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
        keras = import_keras()
        out = np.asarray(keras.ops.convert_to_numpy(self.model_(x, training=False)), dtype=np.float32)
        if out.ndim == 4:
            out = out.mean(axis=(1, 2)) if self.pooling == "avg" else out.max(axis=(1, 2))
        return l2_normalize(out.reshape(len(x), -1))


def _has_rescaling(model: Any) -> bool:
    """Whether a Keras model (nested models included) holds a layer that rescales its input itself."""
    for layer in getattr(model, "layers", ()):
        if type(layer).__name__ in _RESCALING_LAYERS or (hasattr(layer, "layers") and _has_rescaling(layer)):
            return True
    return False


# Keras layers that normalise pixel values inside a model (so 0..255 input is what it expects).
_RESCALING_LAYERS = frozenset({"Rescaling", "Normalization", "Lambda", "TFOpLambda"})


# -------------------------------------------------------------------------------------------------- precision


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
