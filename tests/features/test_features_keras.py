"""Tests of dedup.features.keras: VGG16 and ResNet50 weight loading for real, keras-model:PATH, precision.

TensorFlow tests are marked ``tf``; they share one session-scoped pair of random VGG16 weight files (Keras 3
``.weights.h5`` and the legacy ``.h5`` layout of the Keras cache) at a 64 px input to save CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup.config import FeaturesConfig
from dedup.errors import ConfigError, WeightsError
from dedup.features import make_extractor, make_extractors
from dedup.features import weights as weights_module
from dedup.features.keras import (
    RANDOM_WEIGHTS_SEED,
    RESNET50_DEFAULT_THRESHOLD,
    RESNET50_PREPROCESSING,
    VGG16_DEFAULT_THRESHOLD,
    KerasModelExtractor,
    ResNet50Extractor,
    VGG16Extractor,
    preprocess,
)
from dedup.features.weights import (
    RESNET50_NOTOP_FILENAME,
    RESNET50_NOTOP_MD5,
    RESNET50_NOTOP_URL,
    VGG16_NOTOP_FILENAME,
    VGG16_NOTOP_MD5,
    VGG16_NOTOP_URL,
)

from imagegen import make_photo

SIDE = 64  # VGG16 input side in the tf tests (small: 2 shared CPU cores)
RESNET_SIDE = 32  # the smallest input Keras' ResNet50 accepts: 2 shared CPU cores


def test_vgg16_prepare_resizes_the_whole_image() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    prepared = VGG16Extractor(input_size=SIDE, weights="none").prepare(image)
    assert prepared.shape == (SIDE, SIDE, 3) and prepared.dtype == np.float32
    assert prepared[SIDE // 2, 1].tolist() == [255.0, 0.0, 0.0]  # left edge kept (no crop)
    assert prepared[SIDE // 2, SIDE - 2].tolist() == [0.0, 0.0, 255.0]  # right edge kept
    gray = VGG16Extractor(input_size=SIDE).prepare(image.convert("L"))
    assert gray.shape == (SIDE, SIDE, 3)


def test_vgg16_embed_before_build_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="build"):
        VGG16Extractor(input_size=SIDE).embed(np.zeros((1, SIDE, SIDE, 3), np.float32))


# ------------------------------------------------------------------------------------------------ TensorFlow


@dataclass(frozen=True)
class _RandomVGG:
    keras3_file: Path  # Keras 3 .weights.h5
    legacy_file: Path  # legacy .h5 layout, as the ImageNet file in the Keras cache
    batch: np.ndarray  # (4, SIDE, SIDE, 3) prepared images
    expected: np.ndarray  # (4, 512) embeddings of the in-memory model, avg pooling
    other: np.ndarray  # (4, 512) embeddings of a differently seeded model


def _randomise(model: Any, seed: int) -> None:
    """He-normal kernels and non-zero biases, from a local numpy generator (no global seeds)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        if w.ndim == 4:
            values.append(rng.normal(0.0, np.sqrt(2.0 / np.prod(w.shape[:3])), w.shape).astype(w.dtype))
        else:
            values.append(rng.normal(0.0, 0.1, w.shape).astype(w.dtype))
    model.set_weights(values)


def _reference(model: Any, batch: np.ndarray) -> np.ndarray:
    import keras

    out = np.asarray(model(keras.applications.vgg16.preprocess_input(batch.copy()), training=False))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def random_vgg(tmp_path_factory: pytest.TempPathFactory) -> _RandomVGG:
    import warnings

    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    root = tmp_path_factory.mktemp("vgg16-weights")
    model = keras.applications.VGG16(
        include_top=False, weights=None, pooling="avg", input_shape=(SIDE, SIDE, 3)
    )
    _randomise(model, 1)
    keras3_file = root / "random.weights.h5"
    model.save_weights(keras3_file)
    legacy_file = root / "random_notop.h5"
    with h5py.File(legacy_file, "w") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    prep = VGG16Extractor(input_size=SIDE)
    batch = np.stack([prep.prepare(make_photo(seed)) for seed in range(4)])
    expected = _reference(model, batch)
    _randomise(model, 2)
    other = _reference(model, batch)
    return _RandomVGG(keras3_file, legacy_file, batch, expected, other)


def _vgg(weights: str | Path, pooling: str = "avg", **kw: Any) -> Any:
    return make_extractor(
        FeaturesConfig(extractor="vgg16", weights=str(weights), pooling=pooling, input_size=SIDE, **kw)
    )


@pytest.mark.tf
@pytest.mark.parametrize("which", ["keras3", "legacy", "legacy_named_bin"])
def test_weights_file_really_loads(random_vgg: _RandomVGG, tmp_path: Path, which: str) -> None:
    path = {
        "keras3": random_vgg.keras3_file,
        "legacy": random_vgg.legacy_file,
        "legacy_named_bin": tmp_path / "vgg16.bin",
    }[which]
    if which == "legacy_named_bin":
        path.write_bytes(random_vgg.legacy_file.read_bytes())
    ext = _vgg(path)
    assert isinstance(ext, VGG16Extractor)
    batch = random_vgg.batch.copy()
    vectors = ext.embed(batch)
    assert np.array_equal(batch, random_vgg.batch)  # the caller's batch is not preprocessed in place
    np.testing.assert_allclose(vectors, random_vgg.expected, atol=1e-5)
    assert not np.allclose(vectors, random_vgg.other, atol=1e-2)
    info = ext.info()
    assert info["weights"] == str(path) and info["weights_file"] == str(path)
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["name"], info["pooling"], info["input_size"], info["fallback_used"]) == (
        "vgg16",
        "avg",
        SIDE,
        False,
    )
    assert ext.default_threshold == VGG16_DEFAULT_THRESHOLD and ext.decode_size == SIDE


@pytest.mark.tf
def test_imagenet_file_from_keras_cache_goes_through_the_same_loader(
    random_vgg: _RandomVGG, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []

    def get_file(**kwargs: Any) -> str:  # stands in for the md5-checked cache hit
        calls.append(kwargs)
        return str(random_vgg.legacy_file)

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(weights_module, "_keras_get_file", get_file)
    monkeypatch.setattr(weights_module, "_origin_reachable", lambda url: True)  # as on a machine with network
    ext = _vgg("imagenet")
    assert calls == [
        {
            "fname": VGG16_NOTOP_FILENAME,
            "origin": VGG16_NOTOP_URL,
            "cache_subdir": "models",
            "file_hash": VGG16_NOTOP_MD5,
            "cache_dir": str(tmp_path / "kh"),
        }
    ]
    np.testing.assert_allclose(ext.embed(random_vgg.batch), random_vgg.expected, atol=1e-5)
    assert ext.info()["weights"] == "imagenet" and ext.info()["fallback_used"] is False


@pytest.mark.tf
def test_pooling_max_and_avg_give_different_unit_vectors(random_vgg: _RandomVGG) -> None:
    avg = _vgg(random_vgg.legacy_file, "avg").embed(random_vgg.batch)
    mx_ext = _vgg(random_vgg.legacy_file, "max")
    mx = mx_ext.embed(random_vgg.batch)
    assert avg.shape == mx.shape == (4, 512) and mx.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mx, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(avg, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(avg, mx, atol=1e-2)
    assert mx_ext.info()["pooling"] == "max"
    assert mx_ext.embed(random_vgg.batch[:0]).shape == (0, 512)


@pytest.mark.tf
def test_random_weights_warn_and_are_deterministic(random_vgg: _RandomVGG) -> None:
    warned: list[str] = []
    first = _vgg("none").embed(random_vgg.batch)
    ext = make_extractor(
        FeaturesConfig(extractor="vgg16", weights="none", input_size=SIDE), warn=warned.append
    )
    assert len(warned) == 1 and "untrained VGG16" in warned[0] and "meaningless" in warned[0]
    np.testing.assert_array_equal(ext.embed(random_vgg.batch), first)
    info = ext.info()
    assert info["weights"] == "none" and info["weights_sha256"] is None
    assert info["seed"] == RANDOM_WEIGHTS_SEED


@pytest.mark.tf
def test_with_top_legacy_file_is_rejected_clearly(tmp_path: Path) -> None:
    import warnings

    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    top = keras.applications.VGG16(include_top=True, weights=None, input_shape=(32, 32, 3), classes=2)
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy_h5_format.save_weights_to_hdf5_group(f, top)
    del top
    try:
        with pytest.raises(WeightsError) as err:
            _vgg(path)
        message = str(err.value)
        assert str(path) in message and "does not fit VGG16 without its top" in message
        assert "classifier top" in message and VGG16_NOTOP_FILENAME in message
    finally:
        path.unlink()  # ~130 MB


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["truncated_legacy", "keras3_layout_of_another_model"])
def test_weights_that_do_not_fit_are_a_weights_error(
    random_vgg: _RandomVGG, tmp_path: Path, kind: str
) -> None:
    import h5py

    if kind == "truncated_legacy":
        path = tmp_path / "truncated.h5"
        data = random_vgg.legacy_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / "other.weights.h5"
        with h5py.File(path, "w") as f:
            f["layers/dense/vars/0"] = np.zeros((4, 2), np.float32)
    with pytest.raises(WeightsError) as err:
        _vgg(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------------ resnet50


@dataclass(frozen=True)
class _RandomResNet:
    keras3_file: Path
    legacy_file: Path
    batch: np.ndarray
    expected: np.ndarray


@pytest.fixture(scope="session")
def random_resnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_RandomResNet]:
    import warnings

    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    root = tmp_path_factory.mktemp("resnet50-weights")
    side = RESNET_SIDE
    model = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(side, side, 3)
    )
    rng = np.random.default_rng(3)
    for var in model.weights:
        shape = tuple(var.shape)
        if len(shape) == 4:
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:3])), shape)
        elif var.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        var.assign(value.astype("float32"))
    keras3_file = root / "random.weights.h5"
    model.save_weights(keras3_file)
    legacy_file = root / "random_notop.h5"
    with h5py.File(legacy_file, "w") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    prep = ResNet50Extractor(input_size=side)
    batch = np.stack([prep.prepare(make_photo(seed)) for seed in range(3)])
    out = np.asarray(model(keras.applications.resnet50.preprocess_input(batch.copy()), training=False))
    expected = out / np.linalg.norm(out, axis=1, keepdims=True)
    yield _RandomResNet(keras3_file, legacy_file, batch, expected)
    keras3_file.unlink()
    legacy_file.unlink()  # ~95 MB each


@pytest.mark.tf
@pytest.mark.parametrize("which", ["keras3", "legacy", "imagenet_cache"])
def test_resnet50_weights_really_load(
    random_resnet: _RandomResNet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, which: str
) -> None:
    calls: list[dict[str, Any]] = []
    weights = str(random_resnet.keras3_file if which == "keras3" else random_resnet.legacy_file)
    if which == "imagenet_cache":

        def get_file(**kwargs: Any) -> str:
            calls.append(kwargs)
            return str(random_resnet.legacy_file)

        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
        monkeypatch.setattr(weights_module, "_keras_get_file", get_file)
        monkeypatch.setattr(weights_module, "_origin_reachable", lambda url: True)  # as with network
        weights = "imagenet"
    ext = make_extractor(FeaturesConfig(extractor="resnet50", weights=weights, input_size=RESNET_SIDE))
    assert isinstance(ext, ResNet50Extractor)
    vectors = ext.embed(random_resnet.batch)
    assert vectors.shape == (3, 2048) and ext.dim == 2048
    np.testing.assert_allclose(vectors, random_resnet.expected, atol=1e-4)
    info = ext.info()
    assert (info["name"], info["input_size"], info["fallback_used"]) == ("resnet50", RESNET_SIDE, False)
    assert info["preprocessing"] == RESNET50_PREPROCESSING
    assert ext.default_threshold == RESNET50_DEFAULT_THRESHOLD
    if which == "imagenet_cache":
        assert calls == [
            {
                "fname": RESNET50_NOTOP_FILENAME,
                "origin": RESNET50_NOTOP_URL,
                "cache_subdir": "models",
                "file_hash": RESNET50_NOTOP_MD5,
                "cache_dir": str(tmp_path / "kh"),
            }
        ]


@pytest.mark.tf
def test_resnet50_rejects_vgg16_weights_and_random_weights_are_not_degenerate(random_vgg: _RandomVGG) -> None:
    with pytest.raises(WeightsError, match="does not fit ResNet50 without its top"):
        make_extractor(
            FeaturesConfig(extractor="resnet50", weights=str(random_vgg.legacy_file), input_size=RESNET_SIDE)
        )
    warned: list[str] = []
    ext = make_extractor(
        FeaturesConfig(extractor="resnet50", weights="none", input_size=RESNET_SIDE), warned.append
    )
    assert len(warned) == 1 and "untrained ResNet50" in warned[0]
    prep = np.stack([ext.prepare(make_photo(s)) for s in range(2)])
    v = ext.embed(prep)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)  # not all-zero vectors


# --------------------------------------------------------------------------------------------- keras-model


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny conv net with a feature-map output (.keras), a dense-output model accepting any input size
    (.h5), a one-channel model and a model with a rank-3 output."""
    import warnings

    import keras

    root = tmp_path_factory.mktemp("keras-models")
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    inp = keras.Input((24, 20, 3))
    fmap = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=init, bias_initializer="ones")(inp)
    conv = keras.Model(inp, fmap)
    inp2 = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", kernel_initializer=init)(inp2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.Model(inp2, keras.layers.Dense(5, kernel_initializer=init, bias_initializer="ones")(x))
    inp3 = keras.Input((16, 16, 1))
    gray = keras.Model(
        inp3, keras.layers.Flatten()(keras.layers.Conv2D(2, 8, strides=8, kernel_initializer=init)(inp3))
    )
    inp4 = keras.Input((8, 8, 3))
    tokens = keras.Model(inp4, keras.layers.Reshape((64, 3))(inp4))
    paths = {"conv": root / "conv.keras", "dense": root / "dense.h5", "gray": root / "gray.keras"}
    conv.save(paths["conv"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense.save(paths["dense"])
    gray.save(paths["gray"])
    paths["tokens"] = root / "tokens.keras"
    tokens.save(paths["tokens"])
    return paths


def _keras_model(path: Path, **kw: Any) -> Any:
    return make_extractor(FeaturesConfig(extractor=f"keras-model:{path}", **kw))


@pytest.mark.tf
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_keras_model_feature_map_is_pooled(keras_models: dict[str, Path], pooling: str) -> None:
    import keras

    ext = _keras_model(keras_models["conv"], pooling=pooling, preprocessing="scale01")
    assert isinstance(ext, KerasModelExtractor)
    assert ext.dim == 6 and ext.decode_size == 24
    prepared = ext.prepare(make_photo(1))
    assert prepared.shape == (24, 20, 3)  # (height, width) from the model's input shape
    batch = np.stack([prepared, ext.prepare(make_photo(2))])
    model = keras.saving.load_model(keras_models["conv"])
    fmap = np.asarray(model(batch / 255.0))
    pooled = fmap.mean(axis=(1, 2)) if pooling == "avg" else fmap.max(axis=(1, 2))
    np.testing.assert_allclose(
        ext.embed(batch), pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5
    )
    info = ext.info()
    assert info["model_file"] == str(keras_models["conv"]) and info["input_size"] == [24, 20]
    assert info["pooling"] == pooling and "scale01" in info["preprocessing"]
    assert info["model_sha256"] == hashlib.sha256(keras_models["conv"].read_bytes()).hexdigest()


@pytest.mark.tf
@pytest.mark.parametrize("mode", ["none", "caffe", "tf", "torch"])
def test_keras_model_vector_output_any_input_size_and_preprocessing(
    keras_models: dict[str, Path], mode: str
) -> None:
    import keras

    ext = _keras_model(keras_models["dense"], input_size=40, preprocessing=mode)
    assert ext.dim == 5 and ext.info()["input_size"] == [40, 40] and ext.info()["pooling"] is None
    batch = np.stack([ext.prepare(make_photo(s)) for s in range(3)])
    model = keras.saving.load_model(keras_models["dense"], compile=False)
    x = (
        batch.copy()
        if mode == "none"
        else keras.applications.imagenet_utils.preprocess_input(batch.copy(), mode=mode)
    )
    out = np.asarray(model(x))
    np.testing.assert_allclose(ext.embed(batch), out / np.linalg.norm(out, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.tf
def test_keras_model_gray_input_and_pipeline(keras_models: dict[str, Path], tmp_path: Path) -> None:
    from dedup.config import load_config
    from dedup.pipeline import find_duplicates

    ext = _keras_model(keras_models["gray"])
    assert ext.prepare(make_photo(1)).shape == (16, 16, 1) and ext.dim == 8
    for i in range(3):
        make_photo(i).save(tmp_path / f"{i}.png")
    make_photo(0).resize((160, 120)).save(tmp_path / "0_small.png")
    cfg = load_config(
        overrides={"features.extractor": f"keras-model:{keras_models['gray']}", "cluster.threshold": 0.99}
    )
    result = find_duplicates([tmp_path], cfg)
    assert result.embeddings.vectors.shape == (4, 8) and result.extractor["name"] == "keras-model"
    assert any(
        {Path(result.images[m].path).name for m in g.members} >= {"0.png", "0_small.png"}
        for g in result.groups
    )


@pytest.mark.tf
def test_keras_model_errors(keras_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="model file not found"):
        _keras_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(WeightsError, match="cannot load .* as a Keras model"):
        _keras_model(junk)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="expected a .keras or .h5 file"):
        _keras_model(other)
    with pytest.raises(WeightsError, match="rank 3; supported outputs are a vector"):
        _keras_model(keras_models["tokens"])
    with pytest.raises(ConfigError, match="needs RGB input"):
        _keras_model(keras_models["gray"], preprocessing="caffe")


@pytest.mark.tf
def test_bfloat16_precision_gives_nearly_the_fp32_vectors() -> None:
    x = np.stack([np.asarray(make_photo(s, (SIDE, SIDE)), dtype=np.float32) for s in range(4)])
    fp32 = VGG16Extractor(SIDE, "avg", "none", "float32").build()
    bf16 = VGG16Extractor(SIDE, "avg", "none", "bfloat16").build()
    a, b = fp32.embed(x), bf16.embed(x)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(1).min()) > 0.999
    assert bf16.info()["precision"] == "bfloat16" and fp32.info()["precision"] == "float32"
    with pytest.raises(ConfigError, match="features.precision"):
        VGG16Extractor(SIDE, "avg", "none", "float16")


# ------------------------------------------------------------------------------------------ no TensorFlow


def test_preprocess_without_tensorflow_modes_and_unknown_mode() -> None:
    x = np.full((1, 2, 2, 3), 255.0, np.float32)
    out = preprocess(x, "none")
    assert np.array_equal(out, x) and out is not x
    np.testing.assert_array_equal(preprocess(x, "scale01"), np.ones_like(x))
    with pytest.raises(
        ConfigError, match="features.preprocessing: 'bgr' is not allowed; allowed values: auto"
    ):
        preprocess(x, "bgr")


@pytest.mark.tf
def test_lazy_vgg16_is_built_by_ensure_loaded(random_vgg: _RandomVGG) -> None:
    from dedup.features import ensure_loaded

    (ext,) = make_extractors(
        FeaturesConfig(extractor="vgg16", weights=str(random_vgg.legacy_file), input_size=SIDE), lazy=True
    )
    assert isinstance(ext, VGG16Extractor) and ext.model_ is None
    assert ext.info()["weights_file"] == str(random_vgg.legacy_file)  # complete before the model is built
    ensure_loaded(ext)
    model = ext.model_
    ensure_loaded(ext)  # idempotent
    assert ext.model_ is model
    np.testing.assert_allclose(ext.embed(random_vgg.batch), random_vgg.expected, atol=1e-5)


@pytest.mark.tf
def test_keras_model_load_is_a_no_op_once_built(keras_models: dict[str, Path]) -> None:
    ext = _keras_model(keras_models["conv"])
    model = ext.model_
    assert ext.load() is ext and ext.model_ is model
