"""Tests of dedup.features (the Extractor protocol, make_extractors, the offline fallback) and of the one
registry in dedup.features.names."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dedup import load_config
from dedup.config import FeaturesConfig
from dedup.errors import ConfigError, WeightsError
from dedup.features import REGISTRY, Build, Extractor, ExtractorSpec, make_extractor, make_extractors
from dedup.features import weights as weights_module
from dedup.features.keras import RESNET50_APP, KerasModelExtractor, ResNet50Extractor, VGG16Extractor
from dedup.features.names import allowed_extractors, split_names, weight_free_names
from dedup.features.weightfree import PHASH_DEFAULT_THRESHOLD, ColorExtractor, PHashExtractor, ThumbExtractor
from dedup.features.weights import VGG16_NOTOP_FILENAME, VGG16_NOTOP_URL

from helpers import ROOT

OFFLINE = "URL fetch failure on {}: None -- [Errno -2] Name or service not known"  # what keras raises


def _imports(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------------- import


def test_import_does_not_load_tensorflow() -> None:
    _imports(
        "import dedup.features, sys; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )


def test_config_validates_names_without_loading_the_extractors() -> None:
    # config imports dedup.features.names, which runs dedup/features/__init__.py: both stay light, so
    # `dedup --help` does not pay for numpy, Pillow or scipy
    _imports(
        "import sys\n"
        "from dedup import load_config\n"
        "assert load_config(overrides={'features.extractor': 'phash+color'}).features.extractor\n"
        "heavy = {'numpy', 'PIL', 'scipy', 'dedup.features.keras', 'dedup.features.weightfree'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )


# ------------------------------------------------------------------------------------------------ registry


def test_registry_names_and_flags() -> None:
    assert list(REGISTRY) == [
        "vgg16",
        "resnet50",
        "mobilenet",
        "mobilenet_v2",
        "efficientnet_b0",
        "keras-model",
        "onnx",
        "phash",
        "thumb",
        "color",
    ]
    assert all(name == spec.name for name, spec in REGISTRY.items())
    assert weight_free_names() == ("phash", "thumb", "color")
    assert allowed_extractors() == (
        "vgg16, resnet50, mobilenet, mobilenet_v2, efficientnet_b0, keras-model:PATH, onnx:PATH, phash, "
        "thumb, color"
    )


@pytest.mark.parametrize(
    "name", ["vgg16", "resnet50", "mobilenet", "mobilenet_v2", "efficientnet_b0", "phash", "thumb", "color"]
)
def test_every_factory_builds_the_extractor_its_spec_describes(name: str) -> None:
    spec = REGISTRY[name]
    warned: list[str] = []
    cfg = FeaturesConfig(extractor=name, weights="none", input_size=32)  # lazy + none: no TensorFlow
    ex = spec.build(cfg, Build(name, requested=name, warn=warned.append, lazy=True))
    assert ex.name == name and ex.weight_free is spec.weight_free
    assert ex.info()["requested"] == name and ex.info()["fallback_used"] is False
    assert len(warned) == (0 if spec.weight_free else 1)  # "features come from an untrained VGG16 ..."
    assert all("untrained" in w for w in warned)


def _protocol_members() -> tuple[set[str], set[str]]:
    attributes = set(Extractor.__annotations__)
    methods = {n for n, v in vars(Extractor).items() if callable(v) and not n.startswith("_")}
    return attributes, methods


@pytest.mark.parametrize(
    "make",
    [
        PHashExtractor,
        ThumbExtractor,
        ColorExtractor,
        lambda: VGG16Extractor(weights="none"),
        lambda: ResNet50Extractor(weights="none"),
        lambda: KerasModelExtractor("/models/net.keras"),
    ],
    ids=["phash", "thumb", "color", "vgg16", "resnet50", "keras-model"],
)
def test_every_extractor_has_the_whole_protocol(make: Any) -> None:
    ex = make()
    attributes, methods = _protocol_members()
    assert attributes == {
        "name",
        "dim",
        "default_threshold",
        "candidate_threshold",
        "sure_threshold",
        "decode_size",
        "weight_free",
        "orientation_invariant",
    }
    assert methods == {"info", "prepare", "embed", "load"}
    for attr in attributes:
        assert hasattr(ex, attr), attr
    assert isinstance(ex.name, str) and isinstance(ex.dim, int)
    assert isinstance(ex.weight_free, bool) and isinstance(ex.orientation_invariant, bool)
    for attr in ("default_threshold", "candidate_threshold", "sure_threshold"):
        assert isinstance(getattr(ex, attr), float), attr
    assert ex.decode_size is None or isinstance(ex.decode_size, int)
    assert all(callable(getattr(ex, m)) for m in methods)


def test_keras_model_thresholds_are_its_plain_threshold() -> None:
    # what verify used when the attributes were missing (getattr with the default threshold)
    ex = KerasModelExtractor("/models/net.keras")
    assert ex.candidate_threshold == ex.sure_threshold == ex.default_threshold


def test_make_extractor_phash_info() -> None:
    ext = make_extractor(FeaturesConfig(extractor="phash", hash_size=16))
    assert isinstance(ext, PHashExtractor)
    assert ext.default_threshold == PHASH_DEFAULT_THRESHOLD
    info = ext.info()
    assert info["name"] == "phash" and info["requested"] == "phash"
    assert info["fallback_used"] is False and info["fallback_reason"] is None
    assert info["weights"] is None and info["pooling"] is None
    assert (info["input_size"], info["dim"], info["hash_size"]) == (64, 256, 16)
    assert info["preprocessing"]


def test_unknown_extractor_is_a_config_error_listing_allowed_values() -> None:
    with pytest.raises(
        ConfigError,
        match="allowed values: vgg16, resnet50, mobilenet, mobilenet_v2, efficientnet_b0, "
        "keras-model:PATH, onnx:PATH, phash, thumb, color",
    ):
        make_extractor(FeaturesConfig(extractor="resnet9"))
    with pytest.raises(ConfigError, match="keras-model needs a PATH"):
        make_extractor(FeaturesConfig(extractor="keras-model:"))
    with pytest.raises(ConfigError, match="'phash:x' is not allowed"):
        split_names("phash:x")


def test_registry_accepts_new_extractors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def factory(cfg: FeaturesConfig, build: Build) -> PHashExtractor:
        seen.append(build.name)
        return PHashExtractor(cfg.hash_size)

    monkeypatch.setitem(REGISTRY, "keras-model", dataclasses.replace(REGISTRY["keras-model"], build=factory))
    ext = make_extractor(FeaturesConfig(extractor="keras-model:/models/net.keras", hash_size=20))
    assert seen == ["keras-model:/models/net.keras"]
    assert ext.dim == 400


def test_a_new_extractor_is_added_in_one_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One registry entry is all config validation, messages, the fallback and the factories need."""

    class Flat(ThumbExtractor):
        name = "flat"

    def flat(cfg: FeaturesConfig, build: Build) -> Extractor:
        return Flat(4, requested=build.requested, fallback_reason=build.fallback_reason)

    monkeypatch.setitem(REGISTRY, "flat", ExtractorSpec("flat", flat, weight_free=True))
    assert allowed_extractors().endswith(", color, flat")
    cfg = load_config(overrides={"features.extractor": "phash+flat", "features.offline_fallback": "flat"})
    assert [e.name for e in make_extractors(cfg.features)] == ["phash", "flat"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty Keras cache
    monkeypatch.setattr(weights_module, "_keras_get_file", _offline)
    monkeypatch.setattr(weights_module, "_origin_reachable", lambda url: True)
    (fallback,) = make_extractors(dataclasses.replace(cfg.features, extractor="vgg16"), warn=lambda m: None)
    assert isinstance(fallback, Flat) and fallback.info()["requested"] == "vgg16"


def test_fallback_names_must_be_weight_free() -> None:
    with pytest.raises(ConfigError, match="allowed values: none, or weight-free extractors \\(phash, thumb"):
        load_config(overrides={"features.offline_fallback": "phash+vgg16"})


# ------------------------------------------------------------------------------------------ offline fallback


def _offline(*_: Any, **__: Any) -> str:
    raise Exception(OFFLINE.format(VGG16_NOTOP_URL))


@pytest.mark.parametrize(
    "error",
    [
        Exception(OFFLINE.format(VGG16_NOTOP_URL)),  # keras.utils.get_file without network
        ValueError("Incomplete or corrupted file detected. The md5 file hash does not match"),  # bad download
        TimeoutError("timed out"),  # raised as-is from urlretrieve
    ],
)
def test_imagenet_unavailable_falls_back_to_phash_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception
) -> None:
    def get_file(**_: Any) -> str:
        raise error

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "_keras_get_file", get_file)
    warned: list[str] = []
    ext = make_extractor(
        FeaturesConfig(extractor="vgg16", weights="imagenet", offline_fallback="phash", hash_size=16),
        warn=warned.append,
    )
    assert isinstance(ext, PHashExtractor)
    assert len(warned) == 1 and "\n" not in warned[0]
    message = warned[0]
    for needle in (
        "cannot obtain the ImageNet VGG16 weights",
        "phash",
        VGG16_NOTOP_URL,
        "--weights",
        str(tmp_path / "keras" / "models" / VGG16_NOTOP_FILENAME),
    ):
        assert needle in message
    info = ext.info()
    assert info["fallback_used"] is True and info["requested"] == "vgg16" and info["name"] == "phash"
    assert info["fallback_reason"]
    assert ext.default_threshold == PHASH_DEFAULT_THRESHOLD


def test_imagenet_unavailable_without_fallback_says_how_to_supply_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "_keras_get_file", _offline)
    warned: list[str] = []
    with pytest.raises(WeightsError) as err:
        make_extractor(
            FeaturesConfig(extractor="vgg16", weights="imagenet", offline_fallback="none"), warn=warned.append
        )
    message = str(err.value)
    assert "cannot obtain the ImageNet VGG16 weights" in message
    assert VGG16_NOTOP_URL in message and "--weights FILE" in message
    assert str(tmp_path / "keras" / "models" / VGG16_NOTOP_FILENAME) in message
    assert warned == []


def test_resnet50_imagenet_unavailable_falls_back_with_its_own_howto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "_keras_get_file", _offline)
    warned: list[str] = []
    exts = make_extractors(FeaturesConfig(extractor="resnet50"), warn=warned.append)
    assert [e.name for e in exts] == ["phash", "thumb", "color"]  # the default offline_fallback
    assert isinstance(exts[0], PHashExtractor)
    assert all(e.info()["requested"] == "resnet50" and e.info()["fallback_used"] for e in exts)
    assert len(warned) == 1
    for needle in (
        "cannot obtain the ImageNet ResNet50 weights",
        RESNET50_APP.notop_url,
        str(tmp_path / "keras" / "models" / RESNET50_APP.notop_filename),
    ):
        assert needle in warned[0]
    with pytest.raises(WeightsError, match="to use ResNet50"):
        make_extractor(FeaturesConfig(extractor="resnet50", offline_fallback="none"))


def test_a_fallback_that_is_not_weight_free_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # FeaturesConfig built in code skips load_config's checks; the registry still refuses
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "_keras_get_file", _offline)
    monkeypatch.setattr(weights_module, "_origin_reachable", lambda url: True)
    with pytest.raises(
        ConfigError, match="'resnet50' is not weight-free; allowed values: none, color, phash"
    ):
        make_extractors(FeaturesConfig(extractor="vgg16", offline_fallback="resnet50"))
