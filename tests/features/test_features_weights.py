"""Tests of dedup.features.weights: the Keras cache, the ImageNet download, weights files.

The download tests run the real ``keras.utils.get_file`` against a local HTTP server (marked ``tf``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dedup.config import FeaturesConfig
from dedup.errors import WeightsError
from dedup.features import make_extractor
from dedup.features.keras import RESNET50_APP, VGG16_APP, VGG16Extractor
from dedup.features.weightfree import PHashExtractor
from dedup.features.weights import (
    RESNET50_NOTOP_FILENAME,
    RESNET50_NOTOP_MD5,
    RESNET50_NOTOP_URL,
    VGG16_NOTOP_FILENAME,
    VGG16_NOTOP_URL,
    cached_imagenet_weights,
    fetch_imagenet_weights,
    keras_cache_dir,
)

SIDE = 64


def test_keras_cache_dir_follows_keras_home_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_cache_dir() == tmp_path / "kh"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keras_cache_dir() == tmp_path / ".keras"


def test_cached_imagenet_weights_checks_the_md5_without_tensorflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    data = b"not really weights"
    app = dataclasses.replace(VGG16_APP, notop_md5=hashlib.md5(data).hexdigest())
    assert cached_imagenet_weights(app) is None  # not there
    (tmp_path / "kh" / "models").mkdir(parents=True)
    cached = tmp_path / "kh" / "models" / VGG16_NOTOP_FILENAME
    cached.write_bytes(data)
    assert cached_imagenet_weights(app) == cached
    assert cached_imagenet_weights(VGG16_APP) is None  # wrong md5: not trusted


def test_missing_weights_file_is_a_weights_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg.h5"
    with pytest.raises(WeightsError, match="not found") as err:
        make_extractor(FeaturesConfig(extractor="vgg16", weights=str(missing)))
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("kind", ["random_bytes", "empty", "hdf5_without_keras_layout"])
def test_garbage_weights_file_is_a_weights_error(tmp_path: Path, kind: str) -> None:
    h5py = pytest.importorskip("h5py")  # installed with TensorFlow; the weights sniffer needs it
    path = tmp_path / "weights.h5"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        with h5py.File(path, "w") as f:
            f["something"] = np.arange(10)
    with pytest.raises(WeightsError, match="Keras weights") as err:
        make_extractor(FeaturesConfig(extractor="vgg16", weights=str(path)))
    assert str(path) in str(err.value)


@pytest.mark.tf
def test_offline_fallback_is_decided_without_importing_tensorflow(tmp_path: Path) -> None:
    # A fresh process with an empty Keras cache and an unresolvable weights host: the fallback happens
    # before TensorFlow is imported (it would cost seconds on every offline scan).
    code = (
        "import sys\n"
        "from dedup import features\n"
        "from dedup.config import FeaturesConfig\n"
        "features.weights._origin_reachable = lambda url: False\n"
        "warned = []\n"
        "exts = features.make_extractors(FeaturesConfig(), warned.append, lazy=True)\n"
        "assert [e.name for e in exts] == ['phash', 'thumb', 'color'], exts\n"
        "assert len(warned) == 1 and 'cannot be reached' in warned[0], warned\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "kh")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ---------------------------------------------------------------------------------- the real get_file


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a local HTTP server serving the folder (404 for anything not in it)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.tf
def test_weights_urls_match_keras() -> None:
    import keras.src.applications.vgg16 as keras_vgg16
    from keras.src.applications import resnet

    assert keras_vgg16.WEIGHTS_PATH_NO_TOP == VGG16_NOTOP_URL  # same file as keras.applications.VGG16
    assert RESNET50_NOTOP_URL == resnet.BASE_WEIGHTS_PATH + RESNET50_NOTOP_FILENAME
    assert resnet.WEIGHTS_HASHES["resnet50"][1] == RESNET50_NOTOP_MD5
    assert RESNET50_APP.notop_url == RESNET50_NOTOP_URL


@pytest.mark.tf
def test_real_get_file_failure_falls_back_and_keeps_stdout_clean(
    http_root: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The real keras.utils.get_file, pointed at a local server that has no weights: deterministic with or
    # without internet, and no 58 MB download. Another file sits in the cache under the ImageNet name: its
    # md5 does not match, so Keras must not use it (it tries to re-download, which fails).
    import keras  # noqa: F401  (whatever importing TensorFlow prints is not what this test is about)

    home = tmp_path / "kh"
    (home / "models").mkdir(parents=True)
    (home / "models" / VGG16_NOTOP_FILENAME).write_bytes(np.random.default_rng(0).bytes(4096))
    monkeypatch.setenv("KERAS_HOME", str(home))
    base, _ = http_root
    monkeypatch.setattr(
        VGG16Extractor, "app", dataclasses.replace(VGG16_APP, notop_url=f"{base}/{VGG16_NOTOP_FILENAME}")
    )
    capsys.readouterr()
    warned: list[str] = []
    ext = make_extractor(
        FeaturesConfig(extractor="vgg16", weights="imagenet", input_size=SIDE, offline_fallback="phash"),
        warn=warned.append,
    )
    assert isinstance(ext, PHashExtractor) and ext.info()["fallback_used"] is True
    assert len(warned) == 1 and "404" in warned[0]
    assert capsys.readouterr() == ("", "")  # Keras' cache notice went nowhere: one warning is enough
    with pytest.raises(WeightsError, match="--weights FILE"):
        make_extractor(
            FeaturesConfig(extractor="vgg16", weights="imagenet", input_size=SIDE, offline_fallback="none")
        )


@pytest.mark.tf
def test_a_download_reports_through_warn_only(
    http_root: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import keras  # noqa: F401

    base, root = http_root
    data = np.random.default_rng(1).bytes(50_000)
    (root / "weights_notop.h5").write_bytes(data)
    app = dataclasses.replace(
        VGG16_APP,
        notop_filename="weights_notop.h5",
        notop_url=f"{base}/weights_notop.h5",
        notop_md5=hashlib.md5(data).hexdigest(),
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    capsys.readouterr()
    warned: list[str] = []
    path = fetch_imagenet_weights(app, warned.append)
    assert path == tmp_path / "kh" / "models" / "weights_notop.h5" and path.read_bytes() == data
    assert capsys.readouterr() == ("", "")  # nothing printed, neither on stdout nor on stderr
    assert len(warned) == 1 and not set("\n\r\b\x1b") & set(warned[0]), warned
    assert warned[0].startswith(f"Downloading data from {app.notop_url}"), warned
