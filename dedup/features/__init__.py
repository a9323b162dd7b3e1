"""Feature extractors: one decoded image in, one L2-normalised vector out.

Every extractor follows the :class:`Extractor` protocol; :data:`REGISTRY` maps a name (the
``features.extractor`` config value, or the part before ``:`` for parameterised names such as
``keras-model:PATH``) to an :class:`ExtractorSpec` holding its factory, so new extractors plug in without
touching the pipeline.

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

Modules: :mod:`~dedup.features.names` (the registry and name rules, which :mod:`dedup.config` uses),
:mod:`~dedup.features.weightfree`, :mod:`~dedup.features.keras` (VGG16, ResNet50, keras-model) and
:mod:`~dedup.features.weights` (the Keras cache, downloads, weights files). ``import dedup.features``
imports none of numpy, Pillow or TensorFlow; each extractor's module is imported when it is built, and
TensorFlow/Keras only when a model is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from dedup.errors import ConfigError, WeightsUnavailableError
from dedup.features.names import (
    REGISTRY,
    Build,
    ExtractorFactory,
    ExtractorSpec,
    WarnFn,
    spec_of,
    split_names,
    weight_free_names,
)
from dedup.features.weights import weights_howto

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from dedup.config import FeaturesConfig

__all__ = [
    "REGISTRY",
    "Build",
    "Extractor",
    "ExtractorFactory",
    "ExtractorSpec",
    "WarnFn",
    "ensure_loaded",
    "make_extractor",
    "make_extractors",
    "uses_mirror",
]


class Extractor(Protocol):
    """What the pipeline needs from a feature extractor; every extractor class has all of it."""

    name: str  # "vgg16", "phash", ...
    dim: int  # length of each feature vector
    default_threshold: float  # cosine similarity used when cluster.threshold is "auto"
    candidate_threshold: float  # verify.candidate_threshold "auto": pairs at or above it are checked
    sure_threshold: float  # verify.sure_threshold "auto": pairs at or above it need no keypoint check
    decode_size: int | None  # side in px the decoder must deliver at least (JPEG draft mode); None = full
    weight_free: bool  # needs no model weights; cheap enough to embed mirrored and rotated views
    orientation_invariant: bool  # rotated or mirrored views would give the same vector

    def info(self) -> dict[str, Any]:
        """Identity of the extractor for reports and caches (see the concrete classes for the keys)."""
        ...

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image -> model input. Thread-safe, CPU only, never touches TensorFlow."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Stacked ``prepare`` outputs -> float32 array of shape (n, dim) with L2-normalised rows."""
        ...

    def load(self) -> Extractor:
        """Build the model if it is not built yet (a lazily made CNN extractor); a no-op for the others.
        Returns the extractor itself."""
        ...


def ensure_loaded(extractor: Extractor) -> None:
    """Load the model of an extractor made with ``make_extractor(..., lazy=True)`` (no-op when loaded)."""
    extractor.load()


def uses_mirror(cfg: FeaturesConfig, extractor: Extractor) -> bool:
    """Whether mirror-image vectors are computed: ``features.mirror``, where ``auto`` means on for the weight-
    free extractors (a second hash or histogram costs next to nothing) and off for CNN extractors (a
    second model pass doubles the cost; ImageNet CNNs are trained with random horizontal flips, so their
    pooled features of a mirror image are close to the original's)."""
    if isinstance(cfg.mirror, bool):
        return cfg.mirror
    return extractor.weight_free


def _fallback(cfg: FeaturesConfig, requested: str, reason: str) -> list[Extractor]:
    """The weight-free extractors of ``cfg.offline_fallback``, marked as a fallback for ``requested``."""
    out: list[Extractor] = []
    for name in split_names(cfg.offline_fallback, "features.offline_fallback"):
        spec = spec_of(name)
        if not spec.weight_free:
            raise ConfigError(
                f"features.offline_fallback: {name!r} is not weight-free; allowed values: none, "
                f"{', '.join(sorted(weight_free_names()))} (joined with '+')"
            )
        out.append(spec.build(cfg, Build(name, requested=requested, fallback_reason=reason)))
    return out


def make_extractors(
    cfg: FeaturesConfig, warn: WarnFn | None = None, *, lazy: bool = False
) -> list[Extractor]:
    """Build every extractor of ``cfg.extractor`` (names joined with '+'), ready to embed.

    With ``lazy``, weights are resolved and checked now (so the offline fallback is decided here and
    ``info()`` is complete) but CNN models are only built by :func:`ensure_loaded`: a scan whose features
    all come from the cache never imports TensorFlow.

    An extractor whose ImageNet weights cannot be obtained is replaced by the weight-free extractors of
    ``cfg.offline_fallback`` (after one warning through ``warn``), each name once (the first occurrence:
    offline, the default ``vgg16+phash+thumb+color`` becomes the fallback ``phash+thumb+color``); with
    ``offline_fallback: none`` that is an error saying how to supply the weights file.

    Returns:
        the extractors, in the order given (the first one's similarity is the one reported).

    Raises:
        ConfigError: unknown extractor name.
        WeightsError: weights missing / unusable, or ImageNet unavailable with ``offline_fallback: none``.
    """
    out: list[Extractor] = []
    for name in split_names(cfg.extractor):
        try:
            out.append(spec_of(name).build(cfg, Build(name, requested=name, warn=warn, lazy=lazy)))
        except WeightsUnavailableError as e:
            howto = weights_howto(e.app)
            if cfg.offline_fallback == "none":
                raise WeightsUnavailableError(f"{e}; {howto}", app=e.app) from e
            names = cfg.offline_fallback
            if warn is not None:
                warn(
                    f"{e}; using the weight-free {names} extractor{'s' if '+' in names else ''} instead "
                    f"(features.offline_fallback). {howto[0].upper()}{howto[1:]}"
                )
            out.extend(_fallback(cfg, name, str(e)))
    unique: dict[str, Extractor] = {}
    for ex in out:  # one per name, the first: a fallback standing in for a missing extractor stays one
        unique.setdefault(ex.name, ex)  # even when it was also asked for later (vgg16+phash+thumb+color)
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
