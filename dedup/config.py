"""Typed configuration: one frozen dataclass per stage, loaded from YAML with overrides.

Precedence is CLI flags > ``--config`` file > defaults in code. ``configs/default.yaml`` documents every
key; a test proves it matches the defaults here. Unknown keys and bad values raise :class:`ConfigError`
naming the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dedup.errors import ConfigError

AUTO = "auto"


def _opt(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] = (),
    lo: float | None = None,
    hi: float | None = None,
    auto: bool = False,
    boolean: bool = False,
) -> Any:
    """A dataclass field carrying its own validation rules and one-line help (``boolean``: true/false, for
    fields whose default is not a bool, such as ``auto``)."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "auto": auto, "boolean": boolean}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DiscoverConfig:
    recursive: bool = _opt(True, "descend into sub-folders of each path")
    include_hidden: bool = _opt(False, "also scan hidden files and folders (names starting with '.')")
    follow_symlinks: bool = _opt(True, "follow symbolic links; loops and files reached twice are skipped")


@dataclass(frozen=True)
class DecodeConfig:
    max_pixels: int = _opt(
        178_956_970, "larger images are skipped as decompression bombs (Pillow's limit)", lo=1
    )
    draft: bool = _opt(True, "decode JPEGs at reduced size when the model needs fewer pixels (faster)")


@dataclass(frozen=True)
class FeaturesConfig:
    extractor: str = _opt("vgg16", "feature extractor", choices=("vgg16", "phash"))
    weights: str = _opt(
        "imagenet",
        "vgg16 weights: imagenet (Keras cache/download), none (random, tests "
        "only) or a path to a .h5 / .weights.h5 file",
    )
    pooling: str = _opt("avg", "global pooling of the last VGG16 feature map", choices=("avg", "max"))
    input_size: int = _opt(224, "side in pixels of the square model input", lo=32, hi=1024)
    batch_size: int = _opt(32, "images per model call", lo=1, hi=4096)
    offline_fallback: str = _opt(
        "phash",
        "extractor used when ImageNet weights cannot be obtained; none = stop with an error",
        choices=("phash", "none"),
    )
    hash_size: int = _opt(16, "phash: side of the kept DCT block; bits = hash_size^2", lo=16, hi=64)
    precision: str = _opt(
        "float32",
        "vgg16 compute precision; bfloat16 is ~1.9x faster on CPUs with native bf16 (AVX512_BF16/AMX); "
        "auto = bfloat16 on such CPUs, else float32",
        choices=(AUTO, "float32", "bfloat16"),
    )
    mirror: bool | str = _opt(
        AUTO,
        "also match horizontally mirrored (flipped) copies; auto = on for phash (almost free), off for "
        "vgg16 (it would run the model twice per image)",
        auto=True,
        boolean=True,
    )


@dataclass(frozen=True)
class IndexConfig:
    n_trees: int = _opt(20, "Annoy trees; more = better recall, slower build", lo=1, hi=1000)
    search_k: int = _opt(-1, "Annoy nodes inspected per query; -1 = Annoy's default (n_trees * k)", lo=-1)
    neighbours: int = _opt(
        20, "nearest neighbours looked up per image (k of the neighbour graph)", lo=1, hi=10_000
    )
    seed: int = _opt(42, "seed of the Annoy forest, for reproducible results", lo=0)


@dataclass(frozen=True)
class ClusterConfig:
    threshold: float | str = _opt(
        AUTO,
        "cosine similarity at or above which two images are duplicates; auto = the extractor's default",
        lo=-1.0,
        hi=1.0,
        auto=True,
    )
    min_samples: int = _opt(2, "DBSCAN min_samples: images (itself included) needed to seed a group", lo=2)


@dataclass(frozen=True)
class KeepConfig:
    policy: str = _opt(
        "resolution",
        "which image of a group is kept",
        choices=("resolution", "filesize", "oldest", "newest", "path"),
    )


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = _opt(True, "reuse features of unchanged files from the persistent feature cache")
    dir: str = _opt("auto", "folder of the feature cache; auto = $XDG_CACHE_HOME/dedup or ~/.cache/dedup")


@dataclass(frozen=True)
class Config:
    discover: DiscoverConfig = field(default_factory=DiscoverConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    keep: KeepConfig = field(default_factory=KeepConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The configuration as plain nested dicts (the shape of the YAML file)."""
        return dataclasses.asdict(self)


_SECTION_TYPES: dict[str, type] = {
    "discover": DiscoverConfig,
    "decode": DecodeConfig,
    "features": FeaturesConfig,
    "index": IndexConfig,
    "cluster": ClusterConfig,
    "keep": KeepConfig,
    "cache": CacheConfig,
}


def _coerce(key: str, f: dataclasses.Field[Any], value: Any) -> Any:
    """Check one value against its field's rules and return it in the field's type."""
    meta = f.metadata
    default = f.default
    if meta.get("auto") and isinstance(value, str) and value.lower() == AUTO:
        return AUTO
    if meta.get("boolean"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true, false or 'auto', got {value!r}")
    choices = meta.get("choices") or ()
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif isinstance(default, float) or meta.get("auto"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            allowed = "a number or 'auto'" if meta.get("auto") else "a number"
            raise ConfigError(f"{key}: expected {allowed}, got {value!r}") from None
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(choices)}")
        return value
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}"
        extra = " or 'auto'" if meta.get("auto") else ""
        raise ConfigError(f"{key}: {value!r} is out of range; allowed values: {rng}{extra}")
    return value


def _apply(config: Config, data: Mapping[str, Any], origin: str) -> Config:
    """Return ``config`` with the nested mapping ``data`` applied, validating every key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(data).__name__}")
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(
                f"unknown config section {name!r} in {origin}; allowed sections: {', '.join(_SECTION_TYPES)}"
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{name}: expected a mapping of keys in {origin}, got {values!r}")
        current = getattr(config, name)
        fields = {f.name: f for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown config key {name}.{key} in {origin}; allowed keys in {name}: "
                    f"{', '.join(fields)}"
                )
            changes[key] = _coerce(f"{name}.{key}", fields[key], value)
        sections[name] = dataclasses.replace(current, **changes)
    return dataclasses.replace(config, **sections)


def _nest(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn ``{"cluster.threshold": 0.9}`` into ``{"cluster": {"threshold": 0.9}}``; ``None`` values drop."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, sep, key = dotted.partition(".")
        if not sep:
            raise ConfigError(f"override {dotted!r} must look like section.key")
        nested.setdefault(section, {})[key] = value
    return nested


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration: defaults, then the YAML file at ``path``, then ``overrides``.

    Args:
        path: optional YAML file with the sections of ``configs/default.yaml`` (any subset).
        overrides: dotted keys such as ``{"cluster.threshold": 0.92}``; ``None`` values are ignored, so
            unset CLI flags can be passed straight through.

    Raises:
        ConfigError: unreadable or malformed file, unknown key, or a bad value (the message names the key
            and the allowed values).
    """
    config = Config()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
        if data is not None:
            config = _apply(config, data, str(p))
    if overrides:
        config = _apply(config, _nest(overrides), "command-line options")
    return config


def describe() -> dict[str, dict[str, str]]:
    """One-line help for every key, by section (used by docs tests and ``--help``)."""
    return {
        name: {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}
        for name, cls in _SECTION_TYPES.items()
    }
