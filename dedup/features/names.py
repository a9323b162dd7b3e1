"""The extractor registry and the rules for ``features.extractor`` values.

:data:`REGISTRY` is the one table of extractors: one :class:`ExtractorSpec` per name says whether the name
takes a ``:PARAMETER``, whether the extractor needs model weights, and how to build it from a
:class:`~dedup.config.FeaturesConfig`. Adding an extractor means adding its class and one entry here.

This module imports neither :mod:`dedup.config` (which validates names with it) nor numpy, Pillow or
TensorFlow: each factory imports its extractor's module when it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dedup.errors import ConfigError

if TYPE_CHECKING:
    from dedup.config import FeaturesConfig
    from dedup.features import Extractor

WarnFn = Callable[[str], None]


@dataclass(frozen=True)
class Build:
    """What a factory is asked to build, besides the configuration.

    Attributes:
        name: the configured name with its parameter, if any ("phash", "keras-model:/models/net.keras").
        requested: the extractor the user asked for; differs from ``name`` when this one is an offline
            fallback for it.
        fallback_reason: why ``requested`` could not be used, for a fallback.
        warn: called with one-line warnings (random weights, the messages of a weights download).
        lazy: resolve and check the weights now, so ``info()`` is complete, but build the model only in
            ``load()`` (extractors without a model to load ignore it).
    """

    name: str
    requested: str
    fallback_reason: str | None = None
    warn: WarnFn | None = None
    lazy: bool = False


ExtractorFactory = Callable[["FeaturesConfig", Build], "Extractor"]


@dataclass(frozen=True)
class ExtractorSpec:
    """One entry of :data:`REGISTRY`.

    Attributes:
        name: the ``features.extractor`` value (the part before ':' for a parameterised name).
        build: the factory, ``(FeaturesConfig, Build) -> Extractor``.
        param: what follows ':' ("PATH" for ``keras-model:PATH``), as shown in messages; None = the name
            takes no parameter.
        weight_free: the extractor needs no model weights (allowed in ``features.offline_fallback``).
    """

    name: str
    build: ExtractorFactory
    param: str | None = None
    weight_free: bool = False

    @property
    def usage(self) -> str:
        """The name as written in messages: "phash", "keras-model:PATH"."""
        return self.name if self.param is None else f"{self.name}:{self.param}"


# ------------------------------------------------------------------------------------------------ factories


def _vgg16(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import VGG16Extractor, model_precision

    ex = VGG16Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg))
    return ex.resolve(build.warn) if build.lazy else ex.build(build.warn)


def _resnet50(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import ResNet50Extractor, model_precision

    ex = ResNet50Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg))
    return ex.resolve(build.warn) if build.lazy else ex.build(build.warn)


def _mobilenet(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import MobileNetExtractor, model_precision

    ex = MobileNetExtractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg), cfg.alpha)
    return ex.resolve(build.warn) if build.lazy else ex.build(build.warn)


def _mobilenet_v2(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import MobileNetV2Extractor, model_precision

    ex = MobileNetV2Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg), cfg.alpha)
    return ex.resolve(build.warn) if build.lazy else ex.build(build.warn)


def _efficientnet_b0(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import EfficientNetB0Extractor, model_precision

    ex = EfficientNetB0Extractor(cfg.input_size, cfg.pooling, cfg.weights, model_precision(cfg), cfg.alpha)
    return ex.resolve(build.warn) if build.lazy else ex.build(build.warn)


def _keras_model(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.keras import KerasModelExtractor

    path = build.name.partition(":")[2]
    return KerasModelExtractor(path, cfg.input_size, cfg.pooling, cfg.preprocessing).build(build.warn)


def _onnx(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.onnx import OnnxExtractor

    path = build.name.partition(":")[2]
    ex = OnnxExtractor(path, cfg.input_size, cfg.pooling, cfg.preprocessing, cfg.output)
    return ex.build(build.warn)


def _phash(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.weightfree import PHashExtractor

    return PHashExtractor(cfg.hash_size, requested=build.requested, fallback_reason=build.fallback_reason)


def _thumb(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.weightfree import ThumbExtractor

    return ThumbExtractor(cfg.thumb_size, requested=build.requested, fallback_reason=build.fallback_reason)


def _color(cfg: FeaturesConfig, build: Build) -> Extractor:
    from dedup.features.weightfree import ColorExtractor

    return ColorExtractor(cfg.color_bins, requested=build.requested, fallback_reason=build.fallback_reason)


# The order is that of the allowed values in messages.
REGISTRY: dict[str, ExtractorSpec] = {
    spec.name: spec
    for spec in (
        ExtractorSpec("vgg16", _vgg16),
        ExtractorSpec("resnet50", _resnet50),
        ExtractorSpec("mobilenet", _mobilenet),
        ExtractorSpec("mobilenet_v2", _mobilenet_v2),
        ExtractorSpec("efficientnet_b0", _efficientnet_b0),
        ExtractorSpec("keras-model", _keras_model, param="PATH"),
        ExtractorSpec("onnx", _onnx, param="PATH"),
        ExtractorSpec("phash", _phash, weight_free=True),
        ExtractorSpec("thumb", _thumb, weight_free=True),
        ExtractorSpec("color", _color, weight_free=True),
    )
}


# ------------------------------------------------------------------------------------------------ names


def spec_of(name: str) -> ExtractorSpec:
    """The registry entry of a checked name ("keras-model:/m.keras" -> the keras-model entry)."""
    return REGISTRY[name.partition(":")[0]]


def weight_free_names() -> tuple[str, ...]:
    """The extractors that need no model weights (allowed as ``features.offline_fallback``), in registry
    order."""
    return tuple(spec.name for spec in REGISTRY.values() if spec.weight_free)


def allowed_extractors() -> str:
    """The allowed ``features.extractor`` values, for messages: "vgg16, resnet50, keras-model:PATH, ..."."""
    return ", ".join(spec.usage for spec in REGISTRY.values())


def check_extractor_name(name: str, key: str = "features.extractor", *, within: str | None = None) -> str:
    """Validate a ``features.extractor`` value against the registry (no model is loaded).

    Returns:
        ``name`` unchanged.

    Raises:
        ConfigError: unknown name, a parameterised name without its parameter (``keras-model:`` with no
            path), or a parameter given to a name that takes none; the message lists the allowed values.
    """
    base, sep, arg = name.partition(":")
    spec = REGISTRY.get(base)
    if spec is None or (spec.param is not None) != bool(sep and arg.strip()):
        hint = ""
        if spec is not None and spec.param is not None:
            hint = f" ({base} needs a {spec.param}: {spec.usage})"
        what = f"{name!r} in {within!r}" if within else repr(name)
        raise ConfigError(
            f"{key}: {what} is not allowed{hint}; allowed values: {allowed_extractors()} "
            "(several may be joined with '+', e.g. phash+thumb+color)"
        )
    return name


def split_names(spec: str | list[str] | tuple[str, ...], key: str = "features.extractor") -> list[str]:
    """``"phash+color"`` -> ``["phash", "color"]``, each part checked by :func:`check_extractor_name`.

    A name that carries a path (``keras-model:PATH``, ``onnx:PATH``) may stand anywhere, and its path may
    itself hold '+': a piece after a '+' that does not start with an extractor name belongs to the path
    before it (``keras-model:/m/a+b.keras+phash`` -> the model ``/m/a+b.keras`` and ``phash``). A list
    (from YAML) is taken item by item, each item split the same way.

    Raises:
        ConfigError: empty or unknown name (the message lists the allowed values), or a name given twice.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        names.extend(_join_paths([p.strip() for p in item.split("+")]))
    text = "+".join(names)
    within = text if len(names) > 1 else None
    parts = [check_extractor_name(name, key, within=within) for name in names]
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{key}: {text!r} names an extractor twice")
    return parts


def _takes_param(name: str) -> bool:
    """Whether ``name`` is a parameterised extractor name with its parameter ("keras-model:/m.keras")."""
    base, sep, arg = name.partition(":")
    spec = REGISTRY.get(base)
    return spec is not None and spec.param is not None and bool(sep and arg)


def _join_paths(pieces: list[str]) -> list[str]:
    """Glue the pieces of a path that held '+' back onto the parameterised name before them."""
    out: list[str] = []
    for piece in pieces:
        if out and _takes_param(out[-1]) and piece.partition(":")[0] not in REGISTRY:
            out[-1] = f"{out[-1]}+{piece}"
        else:
            out.append(piece)
    return out
