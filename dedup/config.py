"""Typed configuration: one frozen dataclass per stage, loaded from YAML with overrides.

Precedence is CLI flags > ``--config`` file > defaults in code. ``configs/default.yaml`` documents every
key; a test proves it matches the defaults here. Unknown keys and bad values raise :class:`ConfigError`
naming the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dedup.errors import ConfigError
from dedup.features.names import split_names, weight_free_names
from dedup.keep import KEEP_POLICIES

AUTO = "auto"
CALIBRATE = "calibrate"
#: Images with more pixels are refused as decompression bombs (Pillow's own default limit).
DEFAULT_MAX_PIXELS = 178_956_970
#: Larger images are shrunk right after loading (4096 x 4096 pixels): bounds the memory of decoding.
DEFAULT_REDUCE_ABOVE = 16_777_216
#: Largest value of a seed or count that is handed to a C library as a 32-bit signed integer (Annoy).
C_INT_MAX = 2**31 - 1


def _check_extractor(key: str, value: Any) -> str:
    """An extractor name, or several joined with '+' (a YAML list is joined the same way), each one a
    name of :data:`dedup.features.REGISTRY` (the part before ':' for parameterised names)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return "+".join(split_names([v.strip() for v in value], key))
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a name or a list of names, got {value!r}")
    return "+".join(split_names(value, key))


def _check_fallback(key: str, value: Any) -> str:
    """``none`` or weight-free extractor name(s) joined with '+'."""
    if isinstance(value, str) and value == "none":
        return value
    weight_free = weight_free_names()
    try:
        names = _check_extractor(key, value)
    except ConfigError:
        names = ""
    if not names or any(p not in weight_free for p in names.split("+")):
        allowed = ", ".join(weight_free)
        raise ConfigError(
            f"{key}: {value!r} is not allowed; allowed values: none, or weight-free extractors "
            f"({allowed}) joined with '+'"
        ) from None
    return names


def _check_auto_bool(key: str, value: Any) -> bool | str:
    """true, false or 'auto'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: auto, true, false")


def _check_threshold(key: str, value: Any) -> float | str:
    """A cosine similarity (-1..1), ``auto`` or ``calibrate``."""
    if isinstance(value, str) and value.strip().lower() in (AUTO, CALIBRATE):
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: expected a number, 'auto' or 'calibrate', got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"{key}: expected a number, 'auto' or 'calibrate', got {number!r}")
    if not -1.0 <= number <= 1.0:
        raise ConfigError(
            f"{key}: {value!r} is out of range; allowed values: -1.0 to 1.0, 'auto' or 'calibrate'"
        )
    return number


def _check_folders(key: str, value: Any) -> tuple[str, ...]:
    """A list of folders (a single string is one folder), made absolute; ``[]`` for none."""
    if value is None:
        return ()
    if isinstance(value, (str, Path)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) and str(v) for v in value):
        raise ConfigError(f"{key}: expected a list of folders, got {value!r}")
    return tuple(os.path.normpath(os.path.abspath(os.path.expanduser(str(v)))) for v in value)


def _check_across(key: str, value: Any) -> tuple[str, ...]:
    """``[]`` or exactly two folders A, B (made absolute)."""
    folders = _check_folders(key, value)
    if folders and len(folders) != 2:
        raise ConfigError(f"{key}: expected two folders (A and B) or none, got {len(folders)}")
    if folders and folders[0] == folders[1]:
        raise ConfigError(f"{key}: A and B are the same folder {folders[0]}")
    return folders


def _opt(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] = (),
    lo: float | None = None,
    hi: float | None = None,
    auto: bool = False,
    check: Callable[[str, Any], Any] | None = None,
    integer: bool = False,
) -> Any:
    """A dataclass field carrying its own validation rules and one-line help.

    ``check(key, value)``, when given, replaces the generic rules: it returns the coerced value or raises
    :class:`ConfigError`. ``integer`` marks an integer-or-'auto' field.
    """
    meta = {
        "help": help,
        "choices": choices,
        "lo": lo,
        "hi": hi,
        "auto": auto,
        "check": check,
        "integer": integer,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DiscoverConfig:
    recursive: bool = _opt(True, "descend into sub-folders of each path")
    include_hidden: bool = _opt(False, "also scan hidden files and folders (names starting with '.')")
    follow_symlinks: bool = _opt(True, "follow symbolic links; loops and files reached twice are skipped")


@dataclass(frozen=True)
class DecodeConfig:
    max_pixels: int = _opt(
        DEFAULT_MAX_PIXELS, "larger images are skipped as decompression bombs (Pillow's limit)", lo=1
    )
    draft: bool = _opt(True, "decode JPEGs at reduced size when the model needs fewer pixels (faster)")
    reduce_above: int = _opt(
        DEFAULT_REDUCE_ABOVE,
        "larger images are shrunk by a whole factor right after loading, one at a time (bounds memory)",
        lo=1,
    )


@dataclass(frozen=True)
class FeaturesConfig:
    extractor: str = _opt(
        "vgg16+phash+thumb+color",
        "feature extractor(s): a name of dedup.features.REGISTRY, keras-model:PATH or onnx:PATH; several "
        "joined with '+' are combined (candidates from each, decided by the verify stage)",
        check=_check_extractor,
    )
    weights: str = _opt(
        "imagenet",
        "Keras-applications backbone weights (vgg16, resnet50, mobilenet, mobilenet_v2, efficientnet_b0): "
        "imagenet (Keras cache/download), none (random, tests only) or a path to a .h5 / .weights.h5 file",
    )
    alpha: float | str = _opt(
        AUTO,
        "mobilenet / mobilenet_v2 width multiplier; auto = the one the weights file name states (Keras' "
        "mobilenet_2_5_224_tf_no_top.h5 is 0.25), else 1.0",
        lo=0.1,
        hi=2.0,
        auto=True,
    )
    pooling: str = _opt(
        "avg", "global pooling of the last feature map (Keras backbones, keras-model)", choices=("avg", "max")
    )
    preprocessing: str = _opt(
        "auto",
        "keras-model / onnx input preprocessing: auto (keras-model: none; onnx: the model's metadata "
        "mean/std, else torch) | none | scale01 | caffe | tf | torch",
        choices=("auto", "none", "scale01", "caffe", "tf", "torch"),
    )
    output: str = _opt(
        AUTO,
        "onnx: the tensor used as features; auto = the output of the graph's last global pooling node "
        "(the pooled features before a classifier), else the model's first output",
    )
    input_size: int = _opt(224, "side in pixels of the square model input", lo=32, hi=1024)
    batch_size: int = _opt(32, "images per model call", lo=1, hi=4096)
    offline_fallback: str = _opt(
        "phash+thumb+color",
        "weight-free extractor(s) used when ImageNet weights cannot be obtained; none = stop with an error",
        check=_check_fallback,
    )
    hash_size: int = _opt(16, "phash: side of the kept DCT block; bits = hash_size^2", lo=16, hi=64)
    precision: str = _opt(
        "float32",
        "Keras-applications backbone compute precision; bfloat16 is ~1.9x faster on CPUs with native bf16 "
        "(AVX512_BF16/AMX); "
        "auto = bfloat16 on such CPUs, else float32",
        choices=(AUTO, "float32", "bfloat16"),
    )
    mirror: bool | str = _opt(
        AUTO,
        "also match horizontally mirrored (flipped) copies; auto = on for weight-free extractors (almost "
        "free), off for CNNs (a second model pass per image)",
        check=_check_auto_bool,
    )
    rotations: bool | str = _opt(
        AUTO,
        "weight-free extractors also match copies rotated by 90/180/270 degrees (and, with mirror, "
        "flipped vertically); auto = when the verify stage checks the candidates and no "
        "orientation-invariant extractor (color) proposes rotated copies already",
        check=_check_auto_bool,
    )
    thumb_size: int = _opt(16, "thumb: side of the grayscale thumbnail; dim = thumb_size^2", lo=4, hi=64)
    color_bins: int = _opt(16, "color: hue bins of the HSV histogram (x 4 saturation x 4 value)", lo=4, hi=64)


@dataclass(frozen=True)
class IndexConfig:
    n_trees: int = _opt(20, "Annoy trees; more = better recall, slower build", lo=1, hi=1000)
    search_k: int = _opt(
        -1, "Annoy nodes inspected per query; -1 = Annoy's default (n_trees * k)", lo=-1, hi=C_INT_MAX
    )
    neighbours: int = _opt(
        20, "nearest neighbours looked up per image (k of the neighbour graph)", lo=1, hi=10_000
    )
    seed: int = _opt(42, "seed of the Annoy forest, for reproducible results", lo=0, hi=C_INT_MAX)


@dataclass(frozen=True)
class ClusterConfig:
    threshold: float | str = _opt(
        AUTO,
        "cosine similarity at or above which two images are duplicates; calibrate = every extractor's "
        "thresholds calibrated on the collection (section calibration); auto = the extractor's tuned "
        "default for the weight-free ones, calibrated for CNNs and exported models",
        check=_check_threshold,
    )
    min_samples: int = _opt(
        2, "DBSCAN min_samples: images (itself included) needed to seed a group", lo=2, hi=C_INT_MAX
    )
    across: tuple[str, ...] = _opt(
        (),
        "two folders A, B: only pairs of an image under A with one under B are duplicates (train/test "
        "leakage); A's images are kept like a reference folder's; [] = all pairs",
        check=_check_across,
    )


@dataclass(frozen=True)
class VerifyConfig:
    enabled: bool | str = _opt(
        AUTO,
        "geometric verification of candidate pairs; auto = on when weight-free extractors are combined",
        check=_check_auto_bool,
    )
    candidate_threshold: float | str = _opt(
        AUTO,
        "loose cosine similarity at which a pair becomes a candidate; auto = each extractor's own",
        lo=-1.0,
        hi=1.0,
        auto=True,
    )
    sure_threshold: float | str = _opt(
        AUTO,
        "cosine similarity at which a pair is a duplicate without verification; auto = each extractor's own "
        "(calibrated for CNNs and exported models)",
        lo=-1.0,
        hi=1.0,
        auto=True,
    )
    budget: int = _opt(
        3,
        "keypoint checks per image: candidate pairs are checked most promising first, and a pair only while "
        "one of its images has had fewer checks than this (0 = no limit); pairs already joined are skipped",
        lo=0,
        hi=10_000,
    )
    min_inliers: int = _opt(12, "RANSAC-consistent keypoint matches needed to verify a pair", lo=3, hi=10_000)
    min_coverage: float = _opt(
        0.25,
        "share of the keypoints in the two images' overlap that must be inliers (same-background look-alikes "
        "match only on their background)",
        lo=0.0,
        hi=1.0,
    )
    ratio: float = _opt(
        0.75, "Lowe's ratio test: best match distance / second best must be below", lo=0.1, hi=1.0
    )
    ransac_threshold: float = _opt(
        4.0, "RANSAC reprojection error in pixels (at verify.image_size) for an inlier", lo=0.5, hi=50.0
    )
    max_keypoints: int = _opt(300, "SIFT keypoints kept per image (strongest first)", lo=16, hi=10_000)
    image_size: int = _opt(
        320,
        "longest side in pixels of the image keypoints are computed on (smaller images are enlarged by at "
        "most 2x)",
        lo=64,
        hi=4096,
    )


@dataclass(frozen=True)
class CalibrationConfig:
    sample: int = _opt(
        48,
        "images sampled; each gets 5 synthetic copies (re-encode, resize, crop, flip, brightness)",
        lo=3,
        hi=10_000,
    )
    neighbours: int = _opt(
        5,
        "nearest other images of each sampled one scored as non-copies (keypoint-checked copies excluded)",
        lo=1,
        hi=100,
    )
    target_precision: float = _opt(
        0.99,
        "share of the sample's pairs at or above the calibrated threshold that must be copies",
        lo=0.5,
        hi=1.0,
    )
    seed: int = _opt(0, "seed of the sample", lo=0, hi=2**32 - 1)


@dataclass(frozen=True)
class KeepConfig:
    policy: str = _opt(
        "best",
        "which image of a group is kept: best = most pixels, then colour, then lossless or higher JPEG "
        "quality, then larger file, then not a derived copy",
        choices=KEEP_POLICIES,
    )
    reference: tuple[str, ...] = _opt(
        (),
        "folders whose images are always the kept ones and are never moved or deleted (scanned too)",
        check=_check_folders,
    )


@dataclass(frozen=True)
class GroupConfig:
    method: str = _opt(
        "dbscan",
        "how `dedup group` makes folders: dbscan (duplicate groups + unique/) | agglomerative | kmeans "
        "(every image in a cluster)",
        choices=("dbscan", "agglomerative", "kmeans"),
    )
    clusters: int | str = _opt(
        AUTO,
        "agglomerative/kmeans: number of clusters, or auto = chosen by silhouette over auto_min..auto_max",
        lo=2,
        auto=True,
        integer=True,
    )
    distance_threshold: float = _opt(
        0.0,
        "agglomerative: cosine distance (0..2) at which merging stops; 0 = use clusters instead",
        lo=0.0,
        hi=2.0,
    )
    linkage: str = _opt(
        "average", "agglomerative linkage on cosine distance", choices=("average", "complete")
    )
    exact_max: int = _opt(
        5000,
        "agglomerative: above this many images merges follow the Annoy k-nearest-neighbour graph "
        "(memory O(n*k) instead of O(n^2))",
        lo=2,
    )
    minibatch_above: int = _opt(10_000, "kmeans: above this many images MiniBatchKMeans is used", lo=1)
    auto_min: int = _opt(2, "clusters auto: smallest number of clusters tried", lo=2)
    auto_max: int = _opt(20, "clusters auto: largest number of clusters tried", lo=2, hi=1000)
    silhouette_sample: int = _opt(
        2000, "clusters auto: images (random subsample) the silhouette score is computed on", lo=10
    )
    seed: int = _opt(0, "seed of kmeans and of the silhouette subsample", lo=0, hi=2**32 - 1)


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = _opt(True, "reuse features of unchanged files from the persistent feature cache")
    dir: str = _opt("auto", "folder of the feature cache; auto = $XDG_CACHE_HOME/dedup or ~/.cache/dedup")


@dataclass(frozen=True)
class IgnoreConfig:
    file: str = _opt(
        "auto",
        "the ignore list of 'not a duplicate' pairs (JSON lines) that scans honour; auto = "
        "$XDG_STATE_HOME/dedup/ignore.jsonl or ~/.local/state/dedup/ignore.jsonl; none = no ignore list",
    )


def _check_address(key: str, value: Any) -> str:
    """``auto`` or a Ray cluster address ``HOST:PORT`` (or ``ray://HOST:PORT``)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected auto or a cluster address HOST:PORT, got {value!r}")
    value = value.strip()
    if value == AUTO:
        return value
    host, sep, port = value.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{key}: {value!r} is not allowed; allowed values: auto, or HOST:PORT of a Ray head"
        )
    return value


@dataclass(frozen=True)
class ScaleConfig:
    engine: str = _opt(
        "local",
        "where decoding, extraction and the per-partition duplicate search run: local (this process and "
        "its threads/workers) | ray (a Ray cluster, see the ray section; pip install 'dedup[ray]')",
        choices=("local", "ray"),
    )
    partitions: int = _opt(
        1,
        "partitioned duplicate search: k-means splits the images into this many partitions, searched and "
        "verified one by one (ray: as Ray tasks); 1 = one index over every image",
        lo=1,
        hi=100_000,
    )
    sample: int = _opt(100_000, "partitions: images (random sample) k-means is fitted on", lo=10)
    border: float = _opt(
        0.05,
        "partitions: an image whose similarity to its second-nearest centroid is within this of its nearest "
        "also goes to the second partition, so pairs across a boundary are not lost",
        lo=0.0,
        hi=2.0,
    )
    seed: int = _opt(0, "seed of the partitions' k-means and sample", lo=0, hi=2**32 - 1)


@dataclass(frozen=True)
class RayConfig:
    address: str = _opt(
        AUTO,
        "the Ray cluster: auto (RAY_ADDRESS, or the cluster started on this machine with ray start) or "
        "HOST:PORT of its head",
        check=_check_address,
    )
    actors: int | str = _opt(
        AUTO,
        "extraction actors (each loads the model once); auto = one per CPU of the cluster (per GPU with a "
        "CNN on a cluster with GPUs)",
        lo=1,
        auto=True,
        integer=True,
    )
    batch_size: int = _opt(16, "images per Ray Data block sent to an extraction actor", lo=1, hi=4096)
    gpus: bool | str = _opt(
        AUTO,
        "request a GPU per extraction actor; auto = when the cluster has GPUs and a CNN extractor runs",
        check=_check_auto_bool,
    )
    timeout: float = _opt(
        30.0, "seconds to wait for the cluster to answer when connecting", lo=1.0, hi=3600.0
    )
    retries: int = _opt(
        3,
        "times the images of blocks lost with a node (beyond Ray's own task retries) are sent again",
        lo=0,
        hi=100,
    )


@dataclass(frozen=True)
class Config:
    discover: DiscoverConfig = field(default_factory=DiscoverConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    keep: KeepConfig = field(default_factory=KeepConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    ignore: IgnoreConfig = field(default_factory=IgnoreConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The configuration as plain nested dicts (the shape of the YAML file; folder lists as lists)."""
        return {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
            for name, section in dataclasses.asdict(self).items()
        }


_SECTION_TYPES: dict[str, type] = {
    "discover": DiscoverConfig,
    "decode": DecodeConfig,
    "features": FeaturesConfig,
    "index": IndexConfig,
    "cluster": ClusterConfig,
    "verify": VerifyConfig,
    "calibration": CalibrationConfig,
    "keep": KeepConfig,
    "group": GroupConfig,
    "cache": CacheConfig,
    "ignore": IgnoreConfig,
    "scale": ScaleConfig,
    "ray": RayConfig,
}


def _coerce(key: str, f: dataclasses.Field[Any], value: Any) -> Any:
    """Check one value against its field's rules and return it in the field's type."""
    meta = f.metadata
    default = f.default
    if meta.get("check") is not None:
        return meta["check"](key, value)
    if meta.get("auto") and isinstance(value, str) and value.lower() == AUTO:
        return AUTO
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
    elif meta.get("integer"):  # an integer or 'auto'
        text = value.strip() if isinstance(value, str) else None
        if isinstance(value, bool) or not (isinstance(value, int) or (text and text.isdigit())):
            raise ConfigError(f"{key}: expected an integer or 'auto', got {value!r}")
        value = int(value)
    elif isinstance(default, float) or meta.get("auto"):
        allowed = "a number or 'auto'" if meta.get("auto") else "a number"
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key}: expected {allowed}, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected {allowed}, got {value!r}")
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
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not a text file (not UTF-8 at byte {e.start})") from e
        if "\0" in text:
            raise ConfigError(f"config file {p} is not a text file (it holds NUL bytes)")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
        except RecursionError as e:
            raise ConfigError(f"config file {p} is nested too deeply to be a dedup config") from e
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
