"""Keras weights files: the Keras cache, the ImageNet download, and checking and loading a weights file.

The ImageNet "notop" files are exactly those ``keras.applications`` fetches; dedup looks for them in the
Keras cache itself (no TensorFlow import when the file is there), downloads them with
``keras.utils.get_file`` otherwise, and loads any weights file, legacy ``.h5`` or Keras 3
``.weights.h5``, into a model. TensorFlow, Keras and h5py are imported inside the functions that need
them. Nothing here writes to the terminal: a download's messages go to the ``warn`` callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedup.errors import WeightsError, WeightsUnavailableError

if TYPE_CHECKING:
    from dedup.features.keras import KerasApp
    from dedup.features.names import WarnFn

# The "notop" ImageNet weights exactly as keras.applications.VGG16 fetches them
# (keras.src.applications.vgg16.WEIGHTS_PATH_NO_TOP and its md5; a test checks they still agree).
VGG16_NOTOP_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_NOTOP_FILENAME
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"

# The "notop" ImageNet weights exactly as keras.applications.ResNet50 fetches them
# (keras.src.applications.resnet: BASE_WEIGHTS_PATH + file name, WEIGHTS_HASHES["resnet50"][1]; tested).
RESNET50_NOTOP_FILENAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_NOTOP_FILENAME
)
RESNET50_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"

# Warned with ``weights: none`` ("VGG16" replaced by the backbone's display name).
RANDOM_WEIGHTS_WARNING = (
    "features come from an untrained VGG16 (weights: none); results are meaningless except for tests"
)


def _warn(warn: WarnFn | None, message: str) -> None:
    if warn is not None:
        warn(message)


def keras_cache_dir() -> Path:
    """The Keras cache root, computed the way Keras does but at call time.

    ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable).
    Keras itself reads ``KERAS_HOME`` only once, when it is imported; dedup passes this directory to
    ``keras.utils.get_file`` explicitly, so the variable is honoured whenever it is set.
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def weights_howto(app: KerasApp) -> str:
    """One sentence telling the user how to make ``app``'s ImageNet weights available offline."""
    target = keras_cache_dir() / "models" / app.notop_filename
    return (
        f"to use {app.display}, download {app.notop_url} on a connected machine and pass it with "
        f"--weights FILE (features.weights), or copy it to {target} "
        "(the Keras cache; KERAS_HOME moves it)"
    )


def import_keras(what: str = "the vgg16 extractor") -> Any:
    """Import Keras (and TensorFlow), or say how to install them.

    TensorFlow's native start-up lines are not silenced here (that would take the process's stderr and
    environment); the CLI sets ``TF_CPP_MIN_LOG_LEVEL`` before anything imports TensorFlow.

    Raises:
        WeightsError: Keras cannot be imported; ``what`` names what needs it.
    """
    try:
        import keras
    except ImportError as e:
        raise WeightsError(
            f"{what} needs TensorFlow and Keras ({e}); install them with "
            "`pip install tensorflow`, or use the phash extractor"
        ) from e
    return keras


def _keras_get_file(**kwargs: Any) -> str:
    """``keras.utils.get_file(**kwargs)``: the path of the cached (or just downloaded) file."""
    return str(import_keras().utils.get_file(**kwargs))


# Terminal control sequences (colours of Keras' progress bar) removed from a download's messages.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _one_line(printed: str) -> str:
    """What Keras printed, as a terminal would end up showing it, on one line: each line's text after its
    last carriage return or backspace (progress bars redraw themselves), without colours."""
    lines = (re.split(r"[\r\b]+", line)[-1] for line in _ANSI.sub("", printed).split("\n"))
    return " ".join(line.strip() for line in lines if line.strip())


def _origin_reachable(url: str) -> bool:
    """Whether the host of ``url`` resolves (no connection is made); False on a machine without network."""
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def fetch_imagenet_weights(app: KerasApp, warn: WarnFn | None = None) -> Path:
    """Path of ``app``'s ImageNet "notop" weights, from the Keras cache or downloaded into it.

    What Keras prints meanwhile (download progress, cache notices) is passed to ``warn`` as one line, and
    only when it succeeds, so an offline run shows one warning instead of a failed-download line.

    Returns:
        path of the cached file (its md5 checked by Keras).

    Raises:
        WeightsUnavailableError: not cached (or cached but corrupt) and the download failed.
    """
    if not _origin_reachable(app.notop_url):
        # Offline: say so at once, without importing TensorFlow (~4 s) only to fail the download, and
        # without letting Keras delete a cached file whose md5 it could not confirm by re-downloading.
        host = urllib.parse.urlparse(app.notop_url).hostname
        raise WeightsUnavailableError(
            f"cannot obtain the ImageNet {app.display} weights (not in the Keras cache, and {host} cannot be "
            "reached)",
            app=app,
        )
    cache = keras_cache_dir()
    with contextlib.suppress(OSError):  # get_file falls back to /tmp/.keras if it cannot write here
        cache.mkdir(parents=True, exist_ok=True)
    printed = io.StringIO()  # Keras prints to sys.stdout, which may be carrying a JSON report
    try:
        with contextlib.redirect_stdout(printed):
            path = _keras_get_file(
                fname=app.notop_filename,
                origin=app.notop_url,
                cache_subdir="models",
                file_hash=app.notop_md5,
                cache_dir=str(cache),
            )
    except Exception as e:  # get_file raises a bare Exception for network failures, ValueError for md5
        reason = " ".join(str(e).replace(f" on {app.notop_url}", "").split()) or type(e).__name__
        raise WeightsUnavailableError(
            f"cannot obtain the ImageNet {app.display} weights ({reason})", app=app
        ) from e
    message = _one_line(printed.getvalue())
    if message:
        _warn(warn, message)
    return Path(path)


def file_hash(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes with a :mod:`hashlib` algorithm ("md5", "sha256"), read in 1 MiB
    chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_imagenet_weights(app: KerasApp) -> Path | None:
    """``app``'s ImageNet "notop" file where Keras caches it, if present and its md5 is right; else None.

    Reads no network and imports no TensorFlow (``keras.utils.get_file`` would import both).
    """
    path = keras_cache_dir() / "models" / app.notop_filename
    try:
        return path if path.is_file() and file_hash(path, "md5") == app.notop_md5 else None
    except OSError:
        return None


def resolve_weights(spec: str, app: KerasApp, warn: WarnFn | None = None) -> Path | None:
    """Turn the ``features.weights`` value into a weights file for ``app``.

    Args:
        spec: "imagenet", "none", or a path to a ``.h5`` (legacy Keras layout, as in the Keras cache) or
            ``.weights.h5`` (Keras 3) file.
        app: the backbone the weights are for.
        warn: called with a one-line warning for ``none`` (and with the messages of a download).

    Returns:
        absolute path of the weights file, or None for random initialisation ("none").

    Raises:
        WeightsUnavailableError: "imagenet" and the weights can neither be found nor downloaded.
        WeightsError: the given file does not exist.
    """
    if spec.lower() == "imagenet":
        return fetch_imagenet_weights(app, warn)
    if spec.lower() == "none":
        _warn(warn, RANDOM_WEIGHTS_WARNING.replace("VGG16", app.display))
        return None
    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    return path


def weights_layout(path: Path) -> tuple[str, list[str]]:
    """Sniff a weights file: ("legacy", layer names) or ("keras3", []); WeightsError if neither."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group: Any = f
            if "layer_names" not in f.attrs and "model_weights" in f:
                group = f["model_weights"]
            if "layer_names" in group.attrs:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
                return "legacy", names
            if "layers" in f:
                return "keras3", []
    except OSError as e:
        raise WeightsError(
            f"{path} is not a Keras weights file (not HDF5; expected the .h5 file of the "
            "Keras cache or a Keras 3 .weights.h5)"
        ) from e
    raise WeightsError(
        f"{path} is an HDF5 file but holds no Keras weights (neither the .h5 layout of the "
        "Keras cache nor a Keras 3 .weights.h5)"
    )


@contextlib.contextmanager
def _with_suffix(path: Path, suffix: str) -> Iterator[Path]:
    """Yield ``path`` under a name ending in ``suffix`` (Keras picks the loader by file name)."""
    with tempfile.TemporaryDirectory(prefix="dedup-weights-") as tmp:
        alias = Path(tmp) / f"weights{suffix}"
        try:
            alias.symlink_to(path)
        except OSError:
            shutil.copyfile(path, alias)
        yield alias


def load_weights_file(model: Any, path: Path, app: KerasApp) -> None:
    """Load a without-top weights file into ``model`` (a Keras ``app`` model, include_top=False).

    Both layouts are accepted whatever the file is called: the legacy Keras ``.h5`` layout (that of the
    ImageNet file in the Keras cache; layers matched in order) and Keras 3 ``.weights.h5`` (layers matched
    by name; the classifier layers of a with-top file are ignored).

    Raises:
        WeightsError: missing file, not a Keras weights file, or weights that do not fit the model (the
            message names the file and says what did not fit).
    """
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    layout, layer_names = weights_layout(path)
    name = path.name.lower()
    if layout == "legacy":
        suffix = ".h5"
        named_ok = name.endswith((".h5", ".hdf5")) and not name.endswith(".weights.h5")
    else:
        suffix = ".weights.h5"
        named_ok = name.endswith(".weights.h5")
    alias = contextlib.nullcontext(path) if named_ok else _with_suffix(path, suffix)
    try:
        with alias as load_path, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns per skipped layer before raising anyway
            model.load_weights(str(load_path))
    except Exception as e:  # a user file can break Keras/h5py in many ways; all mean "does not fit"
        detail = " ".join(str(e).split())[:300].rstrip(".") or type(e).__name__
        hint = ""
        if app.top_layers & set(layer_names):
            hint = (
                f"; it looks like the {app.display} file *with* the classifier top, dedup needs the 'notop' "
                f"file ({app.notop_filename})"
            )
        raise WeightsError(f"{path} does not fit {app.display} without its top: {detail}{hint}") from e
