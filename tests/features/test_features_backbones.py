"""The cheaper Keras backbones (mobilenet, mobilenet_v2, efficientnet_b0), onnx:PATH, and names with paths.

Weight loading is tested on files the tests create; real behaviour with the small real ImageNet networks of
``../shared/models`` (MobileNet alpha 0.25, MobileNetV2 int8 ONNX; not VGG16), through the user path: the
``dedup similar`` command with ``--weights PATH`` / ``--features keras-model:PATH`` / ``onnx:PATH``. Those
tests skip when the folder is absent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from dedup.config import FeaturesConfig, load_config
from dedup.errors import ConfigError, WeightsError
from dedup.features import make_extractor, make_extractors
from dedup.features.keras import (
    MOBILENET_APP,
    MOBILENET_V2_APP,
    EfficientNetB0Extractor,
    MobileNetExtractor,
    _efficientnet_imagenet_scale,
    alpha_from_filename,
)
from dedup.features.names import split_names
from dedup.features.onnx import normalise

from helpers import shared_data, shared_models
from imagegen import make_photo

SIDE = 64  # model input side in the tf tests with generated weights (2 shared CPU cores)
MOBILENET_H5 = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_KERAS = "mobilenet025_imagenet_notop.keras"
MOBILENETV2_ONNX = "mobilenetv2-12-int8.onnx"


def _shared_model(name: str) -> Path:
    path = shared_models() / name
    if not path.is_file():
        pytest.skip(f"shared model {path} not found (set DEDUP_SHARED_MODELS)")
    return path


# ----------------------------------------------------------------------------------------- no TensorFlow


def test_weights_file_names_are_those_keras_uses() -> None:
    assert MOBILENET_APP.sized(0.25, 224).notop_filename == MOBILENET_H5
    assert MOBILENET_APP.sized(1.0, 160).notop_filename == "mobilenet_1_0_160_tf_no_top.h5"
    v2 = MOBILENET_V2_APP.sized(0.35, 96)
    assert v2.notop_filename == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    assert v2.notop_url.endswith("/mobilenet_v2/" + v2.notop_filename)
    assert MOBILENET_APP.sized(0.5, 64).notop_filename == "mobilenet_5_0_128_tf_no_top.h5"  # nearest side


@pytest.mark.parametrize(
    ("name", "app", "alpha"),
    [
        (MOBILENET_H5, MOBILENET_APP, 0.25),
        ("mobilenet_7_5_128_tf_no_top.h5", MOBILENET_APP, 0.75),
        ("mobilenet_1_0_224_tf_no_top.h5", MOBILENET_APP, 1.0),
        ("my-weights.h5", MOBILENET_APP, None),
        ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5", MOBILENET_V2_APP, 1.4),
        ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.6_224_no_top.h5", MOBILENET_V2_APP, None),
    ],
)
def test_alpha_is_read_from_the_weights_file_name(name: str, app: Any, alpha: float | None) -> None:
    assert alpha_from_filename(Path(name), app) == alpha


def test_alpha_comes_from_the_file_name_or_the_config(tmp_path: Path) -> None:
    weights = tmp_path / MOBILENET_H5
    weights.write_bytes(b"")  # resolve() sniffs the layout: an empty file is rejected after alpha is set
    ex = MobileNetExtractor(weights=str(weights))
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        ex.resolve()
    assert ex.alpha_ == 0.25 and ex.dim == 256
    named = MobileNetExtractor(weights="none", alpha=0.5).resolve()
    assert named.info()["alpha"] == 0.5 and named.dim == 512
    assert MobileNetExtractor(weights="none").resolve().info()["alpha"] == 1.0


def test_bad_alpha_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"features.alpha: 0.3 is not allowed for mobilenet.*0.25, 0.5"):
        make_extractor(FeaturesConfig(extractor="mobilenet", weights="none", alpha=0.3), lazy=True)
    with pytest.raises(ConfigError, match="efficientnet_b0 has no width multiplier"):
        make_extractor(FeaturesConfig(extractor="efficientnet_b0", weights="none", alpha=0.5), lazy=True)
    with pytest.raises(ConfigError, match=r"features.alpha: 5.0 is out of range"):
        load_config(overrides={"features.alpha": 5})


def test_missing_imagenet_backbone_weights_fall_back_with_the_howto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("dedup.features.weights._origin_reachable", lambda url: False)
    messages: list[str] = []
    cfg = FeaturesConfig(extractor="mobilenet_v2", alpha=0.35)
    names = [e.name for e in make_extractors(cfg, messages.append, lazy=True)]
    assert names == ["phash", "thumb", "color"]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in messages[0]
    assert "MobileNetV2 (alpha 0.35)" in messages[0]


def test_names_with_paths_combine_in_any_order_and_in_yaml_lists(tmp_path: Path) -> None:
    model = "keras-model:/models/a+b.keras"
    assert split_names(f"{model}+phash") == ["keras-model:/models/a+b.keras", "phash"]
    assert split_names(f"phash+{model}+color") == ["phash", "keras-model:/models/a+b.keras", "color"]
    assert split_names("onnx:/m/x.onnx+keras-model:/m/y.keras") == [
        "onnx:/m/x.onnx",
        "keras-model:/m/y.keras",
    ]
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("features:\n  extractor: [onnx:/m/dino+v2.onnx, phash, thumb]\n", encoding="utf-8")
    assert load_config(cfg_file).features.extractor == "onnx:/m/dino+v2.onnx+phash+thumb"
    with pytest.raises(ConfigError, match="names an extractor twice"):
        split_names("phash+onnx:/m.onnx+phash")


def test_model_first_in_a_combination_is_found(tmp_path: Path, cli: Callable[..., Any]) -> None:
    make_photo(1).save(tmp_path / "a.jpg")
    missing = tmp_path / "nets" / "net.onnx"
    result = cli("scan", tmp_path, "--features", f"onnx:{missing}+phash", "--no-cache")
    assert result.exit_code != 0
    assert f"model file not found: {missing}" in result.stderr
    assert "Traceback" not in result.output and "+phash" not in result.stderr.split("not found:")[1]


def test_onnx_normalisation_modes() -> None:
    x = np.full((1, 2, 2, 3), 255.0, dtype=np.float32)
    assert np.allclose(normalise(x, "tf"), 1.0)
    assert np.allclose(normalise(x, "scale01"), 1.0)
    torch = normalise(x, "torch")
    assert np.allclose(
        torch[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    )
    assert np.allclose(normalise(x, "torch", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), 1.0)
    with pytest.raises(ConfigError, match="features.preprocessing"):
        normalise(x, "clip")


def test_onnx_bad_files_are_one_line_errors(tmp_path: Path, cli: Callable[..., Any]) -> None:
    pytest.importorskip("onnxruntime")
    make_photo(1).save(tmp_path / "a.jpg")
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model", encoding="utf-8")
    result = cli("scan", tmp_path / "a.jpg", "--features", f"onnx:{fake}", "--no-cache")
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: onnx: cannot load") and result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------- generated weights (tf)


@pytest.mark.tf
@pytest.mark.parametrize("extractor", ["mobilenet", "mobilenet_v2", "efficientnet_b0"])
def test_backbone_loads_a_weights_file_through_the_config(tmp_path: Path, extractor: str) -> None:
    """Weights saved from one model load into the extractor (Keras 3 .weights.h5), and its vectors are that
    model's on the backbone's own preprocessing; ``none`` gives other (random) vectors."""
    import keras

    cfg = FeaturesConfig(
        extractor=extractor, weights="none", input_size=SIDE, alpha=0.5 if "mob" in extractor else "auto"
    )
    random_ex = make_extractor(cfg)
    images = [make_photo(s, (96, 80)) for s in (1, 2)]
    batch = np.stack([random_ex.prepare(im) for im in images])
    random_vectors = random_ex.embed(batch)
    model = random_ex.model_  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / "mine.weights.h5"
    model.save_weights(str(path))
    loaded = make_extractor(FeaturesConfig(**{**cfg.__dict__, "weights": str(path)}))
    assert loaded.info()["weights_sha256"] and loaded.dim == random_ex.dim
    x = getattr(keras.applications, loaded.app.module).preprocess_input(batch.copy())  # type: ignore[attr-defined]
    if extractor == "efficientnet_b0":  # a weights file: the extra scaling of Keras' ImageNet model
        x = _efficientnet_imagenet_scale(x)
    out = np.asarray(keras.ops.convert_to_numpy(model(x)), dtype=np.float32)
    got = loaded.embed(batch)
    assert np.allclose(got, out / np.linalg.norm(out, axis=1, keepdims=True), atol=1e-4)
    assert not np.allclose(got, random_vectors, atol=1e-3)


@pytest.mark.tf
def test_efficientnet_with_weights_applies_the_imagenet_scaling() -> None:
    ex = EfficientNetB0Extractor(input_size=SIDE, weights="none")
    x = np.full((1, SIDE, SIDE, 3), 255.0 * np.array([0.485, 0.456, 0.406]), dtype=np.float32)
    assert np.allclose(_efficientnet_imagenet_scale(x), x)  # the mean stays
    y = _efficientnet_imagenet_scale(x + 10)
    assert np.allclose((y - x)[0, 0, 0], 10 / np.sqrt([0.229, 0.224, 0.225]))
    assert ex.info()["preprocessing"].startswith("efficientnet_b0/")


# -------------------------------------------------------------------------- real ImageNet networks


def _copies_folder(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A real photo, its flipped and re-encoded copies, and unrelated real photos, in one folder."""
    base = shared_data() / "imagededup-testdata" / "tests" / "data" / "base_images"
    photos = sorted(base.glob("*.jpg"))
    if len(photos) < 6:
        pytest.skip(f"shared photos not found under {base} (set DEDUP_SHARED_DATA)")
    folder = tmp_path / "photos"
    folder.mkdir()
    query = folder / "query.jpg"
    shutil.copyfile(photos[0], query)
    original = Image.open(photos[0]).convert("RGB")
    copies = [folder / "copy_flipped.jpg", folder / "copy_reencoded.jpg"]
    ImageOps.mirror(original).save(copies[0], quality=90)
    original.resize((original.width // 2, original.height // 2)).save(copies[1], quality=60)
    for p in photos[1:6]:
        shutil.copyfile(p, folder / f"other_{p.name}")
    return folder, query, copies


def _similar(cli: Callable[..., Any], query: Path, folder: Path, *args: Any) -> dict[str, Any]:
    result = cli("similar", query, "--in", folder, "--json", "--no-cache", "-k", "7", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _check_copies_first(data: dict[str, Any], copies: list[Path]) -> None:
    names = [Path(m["path"]).name for m in data["matches"]]
    sims = [m["similarity"] for m in data["matches"]]
    assert set(names[:2]) == {c.name for c in copies}, names
    assert min(sims[:2]) > max(sims[2:]) + 0.05, sims


@pytest.mark.tf
@pytest.mark.realdata
def test_real_mobilenet_weights_file_finds_copies(tmp_path: Path, cli: Callable[..., Any]) -> None:
    weights = _shared_model(MOBILENET_H5)
    folder, query, copies = _copies_folder(tmp_path)
    data = _similar(cli, query, folder, "--features", "mobilenet", "--weights", weights)
    assert data["extractor"]["alpha"] == 0.25 and data["extractor"]["dim"] == 256
    _check_copies_first(data, copies)


@pytest.mark.tf
@pytest.mark.realdata
def test_real_keras_model_warns_without_preprocessing_and_works_with_it(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    model = _shared_model(MOBILENET_KERAS)
    folder, query, copies = _copies_folder(tmp_path)
    result = cli(
        "similar", query, "--in", folder, "--features", f"keras-model:{model}", "--json", "--no-cache"
    )
    assert result.exit_code == 0, result.output
    assert "has no rescaling layer and features.preprocessing is none" in result.stderr
    cfg = tmp_path / "tf.yaml"
    cfg.write_text("features:\n  preprocessing: tf\n", encoding="utf-8")
    result = cli(
        "similar",
        query,
        "--in",
        folder,
        "--features",
        f"keras-model:{model}",
        "--config",
        cfg,
        "--json",
        "--no-cache",
        "-k",
        "7",
    )
    assert result.exit_code == 0, result.output
    assert "rescaling layer" not in result.stderr
    _check_copies_first(json.loads(result.stdout), copies)


@pytest.mark.realdata
def test_real_onnx_model_finds_copies(tmp_path: Path, cli: Callable[..., Any]) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _shared_model(MOBILENETV2_ONNX)
    folder, query, copies = _copies_folder(tmp_path)
    data = _similar(cli, query, folder, "--features", f"onnx:{model}")
    info = data["extractor"]
    assert info["dim"] == 1280 and info["layout"] == "NCHW" and info["input_size"] == [224, 224]
    assert info["output"] != "output"  # the pooled features, not the 1000 logits
    _check_copies_first(data, copies)
    logits = _similar(
        cli, query, folder, "--features", f"onnx:{model}", "--config", _yaml(tmp_path, "output: output")
    )
    assert logits["extractor"]["dim"] == 1000


def _yaml(tmp_path: Path, features: str) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(f"features:\n  {features}\n", encoding="utf-8")
    return path
