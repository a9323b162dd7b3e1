"""Tests of dedup.features: phash properties, VGG16 weight loading for real, the offline fallback.

TensorFlow tests are marked ``tf``; they share one session-scoped pair of random VGG16 weight files (Keras 3
``.weights.h5`` and the legacy ``.h5`` layout of the Keras cache) at a 64 px input to save CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup import features
from dedup.config import FeaturesConfig
from dedup.errors import ConfigError, WeightsError
from dedup.features import (
    EXTRACTORS,
    PHASH_DEFAULT_THRESHOLD,
    RANDOM_WEIGHTS_SEED,
    VGG16_DEFAULT_THRESHOLD,
    VGG16_NOTOP_FILENAME,
    VGG16_NOTOP_MD5,
    VGG16_NOTOP_URL,
    PHashExtractor,
    VGG16Extractor,
    keras_cache_dir,
    make_extractor,
    make_extractors,
)

from imagegen import crop_fraction, jpeg_bytes, make_photo

SIDE = 64  # VGG16 input side in the tf tests (small: 2 shared CPU cores)
OFFLINE = "URL fetch failure on {}: None -- [Errno -2] Name or service not known"  # what keras raises


def _reencoded(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(image, quality=quality))).convert("RGB")


def _phash(images: list[Image.Image], hash_size: int = 16) -> np.ndarray:
    ext = PHashExtractor(hash_size)
    return ext.embed(np.stack([ext.prepare(im) for im in images]))


class _Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


# --------------------------------------------------------------------------------------------------- import


def test_import_does_not_load_tensorflow() -> None:
    code = "import dedup.features, sys; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------------- phash


def test_phash_identical_image_has_similarity_exactly_one() -> None:
    photo = make_photo(1)
    v = _phash([photo, photo.copy()])
    assert float(v[0] @ v[1]) == 1.0
    assert np.array_equal(v[0], v[1])


def test_phash_vectors_are_plus_minus_one_over_sqrt_dim_and_unit_norm() -> None:
    v = _phash([make_photo(s) for s in range(4)])
    assert v.dtype == np.float32 and v.shape == (4, 256)
    assert set(np.unique(v).tolist()) == {-1 / 16, 1 / 16}
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    # the median split sets about half of the bits
    assert all(100 <= int((row > 0).sum()) <= 156 for row in v)


@pytest.mark.parametrize("variant", ["jpeg_q30", "half_size", "jpeg_q50_of_half_size"])
def test_phash_near_duplicates_are_similar(variant: str) -> None:
    photo = make_photo(7)
    half = photo.resize((160, 120), Image.Resampling.BILINEAR)
    other = {
        "jpeg_q30": _reencoded(photo, 30),
        "half_size": half,
        "jpeg_q50_of_half_size": _reencoded(half, 50),
    }[variant]
    v = _phash([photo, other])
    assert float(v[0] @ v[1]) > 0.85


def test_phash_unrelated_images_are_dissimilar() -> None:
    v = _phash([make_photo(s) for s in range(10, 16)])
    sims = v @ v.T
    off_diagonal = sims[~np.eye(len(v), dtype=bool)]
    assert off_diagonal.max() < 0.6


def test_phash_cosine_equals_one_minus_twice_hamming_over_bits() -> None:
    photo = make_photo(3)
    v = _phash([photo, crop_fraction(photo, 0.08)])
    bits = v.shape[1]
    hamming = int(np.count_nonzero((v[0] > 0) != (v[1] > 0)))
    assert 0 < hamming < bits // 2  # a non-trivial example
    assert float(v[0] @ v[1]) == 1 - 2 * hamming / bits  # exact: every term is a multiple of 1/256


def test_phash_threshold_constant_in_hamming_terms() -> None:
    # 0.70 means at most 15 % of the bits differ: 38 of 256 (imagededup's default is 10 of 64)
    bits = 256
    assert max(h for h in range(bits + 1) if 1 - 2 * h / bits >= PHASH_DEFAULT_THRESHOLD) == 38


def test_phash_hash_size_sets_dim_and_sizes() -> None:
    ext = PHashExtractor(32)
    assert (ext.dim, ext.image_size, ext.decode_size) == (1024, 128, 128)
    prepared = ext.prepare(make_photo(2))
    assert prepared.shape == (128, 128) and prepared.dtype == np.float32
    v = ext.embed(prepared[None])
    assert v.shape == (1, 1024)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-6)


def test_phash_embed_checks_shape_and_accepts_empty_batch() -> None:
    ext = PHashExtractor(16)
    assert ext.embed(np.zeros((0, 64, 64), np.float32)).shape == (0, 256)
    with pytest.raises(ValueError, match="shape"):
        ext.embed(np.zeros((2, 32, 32), np.float32))


def test_phash_prepare_accepts_any_mode() -> None:
    ext = PHashExtractor(16)
    rgba = make_photo(4).convert("RGBA")
    assert np.array_equal(ext.prepare(rgba), ext.prepare(rgba.convert("RGB")))


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


# --------------------------------------------------------------------------------------------------- registry


def test_unknown_extractor_is_a_config_error_listing_allowed_values() -> None:
    with pytest.raises(
        ConfigError, match="allowed values: vgg16, resnet50, keras-model:PATH, phash, thumb, color"
    ):
        make_extractor(FeaturesConfig(extractor="resnet9"))
    with pytest.raises(ConfigError, match="keras-model needs a PATH"):
        make_extractor(FeaturesConfig(extractor="keras-model:"))


def test_registry_accepts_new_extractors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def factory(cfg: FeaturesConfig, warn: Any) -> PHashExtractor:
        seen.append(cfg.extractor)
        return PHashExtractor(cfg.hash_size)

    monkeypatch.setitem(EXTRACTORS, "keras-model", factory)
    ext = make_extractor(FeaturesConfig(extractor="keras-model:/models/net.keras", hash_size=20))
    assert seen == ["keras-model:/models/net.keras"]
    assert ext.dim == 400


# ------------------------------------------------------------------------------------------ weights (no TF)


def test_keras_cache_dir_follows_keras_home_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_cache_dir() == tmp_path / "kh"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keras_cache_dir() == tmp_path / ".keras"


def test_missing_weights_file_is_a_weights_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg.h5"
    with pytest.raises(WeightsError, match="not found") as err:
        make_extractor(FeaturesConfig(weights=str(missing)))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("kind", ["random_bytes", "empty", "hdf5_without_keras_layout"])
def test_garbage_weights_file_is_a_weights_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "weights.h5"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["something"] = np.arange(10)
    with pytest.raises(WeightsError, match="Keras weights") as err:
        make_extractor(FeaturesConfig(weights=str(path)))
    assert str(path) in str(err.value)


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
    monkeypatch.setattr(features, "_keras_get_file", get_file)
    warned = _Warnings()
    ext = make_extractor(
        FeaturesConfig(weights="imagenet", offline_fallback="phash", hash_size=16), warn=warned
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
    monkeypatch.setattr(features, "_keras_get_file", _offline)
    warned = _Warnings()
    with pytest.raises(WeightsError) as err:
        make_extractor(FeaturesConfig(weights="imagenet", offline_fallback="none"), warn=warned)
    message = str(err.value)
    assert "cannot obtain the ImageNet VGG16 weights" in message
    assert VGG16_NOTOP_URL in message and "--weights FILE" in message
    assert str(tmp_path / "keras" / "models" / VGG16_NOTOP_FILENAME) in message
    assert warned == []


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
    return make_extractor(FeaturesConfig(weights=str(weights), pooling=pooling, input_size=SIDE, **kw))


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
    monkeypatch.setattr(features, "_keras_get_file", get_file)
    monkeypatch.setattr(features, "_origin_reachable", lambda url: True)  # as on a machine with network
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
    warned = _Warnings()
    first = _vgg("none").embed(random_vgg.batch)
    ext = make_extractor(FeaturesConfig(weights="none", input_size=SIDE), warn=warned)
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_404(tmp_path: Path) -> Iterator[str]:
    """Base URL of a local HTTP server that answers 404 to everything (an empty directory)."""
    empty = tmp_path / "www"
    empty.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(empty))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.tf
def test_offline_fallback_is_decided_without_importing_tensorflow(tmp_path: Path) -> None:
    # A fresh process with an empty Keras cache and an unresolvable weights host: the fallback happens
    # before TensorFlow is imported (it would cost seconds on every offline scan).
    code = (
        "import sys\n"
        "from dedup import features\n"
        "from dedup.config import FeaturesConfig\n"
        "features._origin_reachable = lambda url: False\n"
        "warned = []\n"
        "exts = features.make_extractors(FeaturesConfig(), warned.append, lazy=True)\n"
        "assert [e.name for e in exts] == ['phash', 'thumb', 'color'], exts\n"
        "assert len(warned) == 1 and 'cannot be reached' in warned[0], warned\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "kh")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_real_get_file_failure_falls_back_and_keeps_stdout_clean(
    http_404: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    random_vgg: _RandomVGG,
) -> None:
    # The real keras.utils.get_file, pointed at a local server that has no weights: deterministic with or
    # without internet, and no 58 MB download. A random file sits in the cache under the ImageNet name:
    # its md5 does not match, so Keras must not use it (it tries to re-download, which fails).
    import keras.src.applications.vgg16 as keras_vgg16

    assert keras_vgg16.WEIGHTS_PATH_NO_TOP == VGG16_NOTOP_URL  # same file as keras.applications.VGG16
    home = tmp_path / "kh"
    (home / "models").mkdir(parents=True)
    (home / "models" / VGG16_NOTOP_FILENAME).write_bytes(random_vgg.legacy_file.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(
        features.VGG16Extractor,
        "app",
        dataclasses.replace(features.VGG16_APP, notop_url=f"{http_404}/{VGG16_NOTOP_FILENAME}"),
    )
    warned = _Warnings()
    ext = make_extractor(
        FeaturesConfig(weights="imagenet", input_size=SIDE, offline_fallback="phash"), warn=warned
    )
    assert isinstance(ext, PHashExtractor) and ext.info()["fallback_used"] is True
    assert len(warned) == 1 and "404" in warned[0]
    assert capsys.readouterr().out == ""  # Keras' cache notice went to stderr, not stdout
    with pytest.raises(WeightsError, match="--weights FILE"):
        make_extractor(FeaturesConfig(weights="imagenet", input_size=SIDE, offline_fallback="none"))


# ------------------------------------------------------------------------------------------------ resnet50

RESNET_SIDE = 32  # the smallest input Keras' ResNet50 accepts: 2 shared CPU cores


@pytest.mark.tf
def test_resnet50_constants_match_keras() -> None:
    from keras.src.applications import resnet

    assert features.RESNET50_NOTOP_URL == resnet.BASE_WEIGHTS_PATH + features.RESNET50_NOTOP_FILENAME
    assert resnet.WEIGHTS_HASHES["resnet50"][1] == features.RESNET50_NOTOP_MD5
    assert features.RESNET50_APP.notop_url == features.RESNET50_NOTOP_URL


def test_resnet50_imagenet_unavailable_falls_back_with_its_own_howto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(features, "_keras_get_file", _offline)
    warned = _Warnings()
    exts = make_extractors(FeaturesConfig(extractor="resnet50"), warn=warned)
    assert [e.name for e in exts] == ["phash", "thumb", "color"]  # the default offline_fallback
    assert isinstance(exts[0], PHashExtractor)
    assert all(e.info()["requested"] == "resnet50" and e.info()["fallback_used"] for e in exts)
    assert len(warned) == 1
    for needle in (
        "cannot obtain the ImageNet ResNet50 weights",
        features.RESNET50_NOTOP_URL,
        str(tmp_path / "keras" / "models" / features.RESNET50_NOTOP_FILENAME),
    ):
        assert needle in warned[0]
    with pytest.raises(WeightsError, match="to use ResNet50"):
        make_extractor(FeaturesConfig(extractor="resnet50", offline_fallback="none"))


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
    prep = features.ResNet50Extractor(input_size=side)
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
        monkeypatch.setattr(features, "_keras_get_file", get_file)
        monkeypatch.setattr(features, "_origin_reachable", lambda url: True)  # as with network
        weights = "imagenet"
    ext = make_extractor(FeaturesConfig(extractor="resnet50", weights=weights, input_size=RESNET_SIDE))
    assert isinstance(ext, features.ResNet50Extractor)
    vectors = ext.embed(random_resnet.batch)
    assert vectors.shape == (3, 2048) and ext.dim == 2048
    np.testing.assert_allclose(vectors, random_resnet.expected, atol=1e-4)
    info = ext.info()
    assert (info["name"], info["input_size"], info["fallback_used"]) == ("resnet50", RESNET_SIDE, False)
    assert info["preprocessing"] == features.RESNET50_PREPROCESSING
    assert ext.default_threshold == features.RESNET50_DEFAULT_THRESHOLD
    if which == "imagenet_cache":
        assert calls == [
            {
                "fname": features.RESNET50_NOTOP_FILENAME,
                "origin": features.RESNET50_NOTOP_URL,
                "cache_subdir": "models",
                "file_hash": features.RESNET50_NOTOP_MD5,
                "cache_dir": str(tmp_path / "kh"),
            }
        ]


@pytest.mark.tf
def test_resnet50_rejects_vgg16_weights_and_random_weights_are_not_degenerate(random_vgg: _RandomVGG) -> None:
    with pytest.raises(WeightsError, match="does not fit ResNet50 without its top"):
        make_extractor(
            FeaturesConfig(extractor="resnet50", weights=str(random_vgg.legacy_file), input_size=RESNET_SIDE)
        )
    warned = _Warnings()
    ext = make_extractor(FeaturesConfig(extractor="resnet50", weights="none", input_size=RESNET_SIDE), warned)
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
    assert isinstance(ext, features.KerasModelExtractor)
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
