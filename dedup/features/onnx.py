"""``onnx:PATH``: any exported image model (CLIP, DINOv2, SSCD, a model-zoo classifier) through onnxruntime.

What the model needs is read from the model where it says so, else from the configuration:

* **input size and layout**: the input's shape, ``(N, 3, H, W)`` (NCHW, the PyTorch export convention) or
  ``(N, H, W, 3)`` (NHWC); a dynamic height/width gets ``features.input_size``.
* **normalisation**: ``features.preprocessing``; ``auto`` = the ``mean`` / ``std`` the model's metadata
  states (comma-separated, on the 0..1 scale), else ``torch`` (0..1, ImageNet mean/std, as torchvision,
  DINOv2, SSCD and the ONNX model zoo expect).
* **output**: ``features.output``; ``auto`` = the output of the graph's last global pooling node
  (``GlobalAveragePool``, its int8 ``QLinearGlobalAveragePool``, ``GlobalMaxPool``) when the graph has one,
  i.e. the pooled features before a classifier, else the model's first output. A named tensor may be
  any output or inner tensor. Feature maps (rank 4) are globally pooled with ``features.pooling``, token
  sequences (rank 3) averaged over the tokens.

onnxruntime is an optional dependency (``pip install 'dedup[onnx]'``, which also brings ``onnx``, needed to
read inner tensors); both are imported when a model is built.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dedup.embeddings import l2_normalize
from dedup.errors import ConfigError, WeightsError
from dedup.features.weights import file_hash

if TYPE_CHECKING:
    from dedup.features.names import WarnFn

# Nothing is known about a user's model: the same starting point as keras-model; `threshold: calibrate`.
ONNX_DEFAULT_THRESHOLD = 0.90
ONNX_CANDIDATE_THRESHOLD = 0.80
ONNX_SURE_THRESHOLD = 1.01  # never without calibration: every candidate is verified

ONNX_PREPROCESSING = "onnx/resize-bilinear/{mode}/v1"
ONNX_MODES = ("auto", "none", "scale01", "caffe", "tf", "torch")

_POOL_OPS = ("GlobalAveragePool", "QLinearGlobalAveragePool", "GlobalMaxPool")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

INSTALL_HINT = "install it with `pip install 'dedup[onnx]'` (onnxruntime and onnx)"


def normalise(
    x: np.ndarray, mode: str, mean: tuple[float, ...] = (), std: tuple[float, ...] = ()
) -> np.ndarray:
    """RGB 0..255 pixels (channels last) -> model input, in numpy (no TensorFlow).

    Modes as ``features.preprocessing``: ``none``, ``scale01`` (/255), ``tf`` (-1..1), ``torch`` (0..1,
    then ``(x - mean) / std``, ImageNet's unless given), ``caffe`` (BGR, ImageNet mean subtracted).
    """
    x = np.asarray(x, dtype=np.float32)
    if mode == "none":
        return x.copy()
    if mode == "scale01":
        return x / np.float32(255.0)
    if mode == "tf":
        return x / np.float32(127.5) - np.float32(1.0)
    if mode == "torch":
        m = np.array(mean or _IMAGENET_MEAN, dtype=np.float32)
        s = np.array(std or _IMAGENET_STD, dtype=np.float32)
        return (x / np.float32(255.0) - m) / s
    if mode == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    raise ConfigError(
        f"features.preprocessing: {mode!r} is not allowed; allowed values: {', '.join(ONNX_MODES)}"
    )


def _floats(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.replace("[", "").replace("]", "").split(","))
    except ValueError:
        return ()
    return values if len(values) == 3 else ()


def _pooled_output(model: Any) -> tuple[Any, str | None]:
    """The model with the output of its last global pooling node exposed (dequantized for int8), and the
    name of that output; ``(model, None)`` when the graph has no such node or it is an output already."""
    import onnx
    from onnx import helper

    graph = model.graph
    pools = [n for n in graph.node if n.op_type in _POOL_OPS]
    if not pools:
        return model, None
    node = pools[-1]
    name = node.output[0]
    outputs = {o.name for o in graph.output}
    if name in outputs:
        return model, name
    if node.op_type == "QLinearGlobalAveragePool":  # inputs: X, x_scale, x_zp, y_scale, y_zp
        float_name = f"{name}_dedup_float"
        graph.node.append(
            helper.make_node("DequantizeLinear", [name, node.input[3], node.input[4]], [float_name])
        )
        name = float_name
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model, name


class OnnxExtractor:
    """An ONNX image model run by onnxruntime on the CPU (``onnx:PATH``); see the module docstring.

    Args:
        path: the ``.onnx`` file.
        input_size: side used when the model's input height/width are dynamic.
        pooling: "avg" or "max", for feature-map outputs.
        preprocessing: one of :data:`ONNX_MODES`.
        output: "auto" or a tensor name.
    """

    name = "onnx"
    weight_free = False
    orientation_invariant = False
    candidate_threshold = ONNX_CANDIDATE_THRESHOLD
    sure_threshold = ONNX_SURE_THRESHOLD
    default_threshold = ONNX_DEFAULT_THRESHOLD

    def __init__(
        self,
        path: str | Path,
        input_size: int = 224,
        pooling: str = "avg",
        preprocessing: str = "auto",
        output: str = "auto",
    ) -> None:
        if pooling not in ("avg", "max"):
            raise ConfigError(f"features.pooling: {pooling!r} is not allowed; allowed values: avg, max")
        if preprocessing not in ONNX_MODES:
            raise ConfigError(
                f"features.preprocessing: {preprocessing!r} is not allowed; allowed values: "
                f"{', '.join(ONNX_MODES)}"
            )
        self.path = Path(path).expanduser().absolute()
        self.input_size = input_size
        self.pooling = pooling
        self.preprocessing = preprocessing
        self.output = output
        self.dim = 0
        self.decode_size: int | None = input_size
        self.session_: Any = None
        self.input_name_ = ""
        self.output_name_ = ""
        self.nchw_ = True
        self.input_hw_: tuple[int, int] = (input_size, input_size)
        self.mode_ = "torch"
        self.mean_: tuple[float, ...] = ()
        self.std_: tuple[float, ...] = ()
        self._sha256: str | None = None

    def build(self, warn: WarnFn | None = None) -> OnnxExtractor:
        """Load the model, pick the output, read input size / layout / normalisation, find the output size.

        Raises:
            WeightsError: onnxruntime (or onnx) missing, missing or unreadable file, an input that is not
                one image batch, an unknown output name, or an output that is not a vector, feature map or
                token sequence.
        """
        path = self.path
        if not path.is_file():
            raise WeightsError(
                f"onnx: model file not found: {path}" if not path.exists() else f"onnx: {path} is not a file"
            )
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise WeightsError(f"the onnx extractor needs onnxruntime ({e}); {INSTALL_HINT}") from e
        data: bytes | str = str(path)
        meta: dict[str, str] = {}
        chosen = None if self.output == "auto" else self.output
        try:
            import onnx

            have_onnx = True
        except ImportError:
            have_onnx = False
        if have_onnx:
            try:
                model = onnx.load(str(path))
            except Exception as e:  # protobuf errors of a user file
                raise WeightsError(f"onnx: cannot load {path} as an ONNX model: {_detail(e)}") from e
            meta = {p.key: p.value for p in model.metadata_props}
            if chosen is None:
                model, chosen = _pooled_output(model)
            elif chosen not in {o.name for o in model.graph.output}:
                if not any(chosen in n.output for n in model.graph.node):
                    raise WeightsError(f"onnx: {path} has no tensor named {chosen!r} (features.output)")
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(chosen, onnx.TensorProto.FLOAT, None)
                )
            data = model.SerializeToString()
        elif chosen is not None:
            raise WeightsError(f"onnx: reading the tensor {chosen!r} needs the onnx package; {INSTALL_HINT}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's InvalidGraph / Fail of a user file
            raise WeightsError(f"onnx: cannot load {path} as an ONNX model: {_detail(e)}") from e
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise WeightsError(f"onnx: {path} has {len(inputs)} inputs; dedup needs one image input")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or not (shape[1] == 3 or shape[3] == 3):
            raise WeightsError(
                f"onnx: {path} takes input of shape {shape}; dedup needs images (N, 3, H, W) or (N, H, W, 3)"
            )
        self.nchw_ = shape[1] == 3
        hw = shape[2:4] if self.nchw_ else shape[1:3]
        side = self.input_size
        self.input_hw_ = tuple(int(v) if isinstance(v, int) and v > 0 else side for v in hw)  # type: ignore[assignment]
        self.input_name_ = inputs[0].name
        self.output_name_ = chosen or session.get_outputs()[0].name
        if self.preprocessing == "auto":
            self.mean_, self.std_ = _floats(meta.get("mean")), _floats(meta.get("std"))
            self.mode_ = "torch"
        else:
            self.mode_ = self.preprocessing
        self.session_ = session
        probe = self._run(np.full((1, *self.input_hw_, 3), 128.0, dtype=np.float32))
        self.dim = int(probe.shape[1])
        self.decode_size = max(self.input_hw_)
        return self

    def load(self) -> OnnxExtractor:
        """:meth:`build`, unless the model is loaded already (the registry builds it eagerly)."""
        return self if self.session_ is not None else self.build()

    def info(self) -> dict[str, Any]:
        """Keys: name, weights (None), model_file, model_sha256, output (the tensor used), pooling, input_size
        ([height, width]), layout (NCHW | NHWC), dim, preprocessing, fallback_used (False), requested."""
        if self._sha256 is None and self.path.is_file():
            self._sha256 = file_hash(self.path, "sha256")
        mode = self.mode_
        if self.mean_:
            mode = f"torch-mean{','.join(map(str, self.mean_))}-std{','.join(map(str, self.std_))}"
        return {
            "name": self.name,
            "weights": None,
            "model_file": str(self.path),
            "model_sha256": self._sha256,
            "output": self.output_name_,
            "pooling": self.pooling,
            "input_size": list(self.input_hw_),
            "layout": "NCHW" if self.nchw_ else "NHWC",
            "dim": self.dim,
            "preprocessing": ONNX_PREPROCESSING.format(mode=mode),
            "fallback_used": False,
            "requested": f"{self.name}:{self.path}",
        }

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The whole image resized (BILINEAR, aspect ratio not kept) to the model input: float32 (h, w, 3),
        RGB 0..255."""
        h, w = self.input_hw_
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(rgb.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = normalise(batch, self.mode_, self.mean_, self.std_)
        if self.nchw_:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        try:
            (out,) = self.session_.run([self.output_name_], {self.input_name_: x})
        except Exception as e:  # onnxruntime errors of a user model (wrong dtype, shape rules)
            raise WeightsError(f"onnx: {self.path} failed on a batch of shape {x.shape}: {_detail(e)}") from e
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 4:  # feature map: (N, C, H, W) for NCHW models, else (N, H, W, C)
            axes = (2, 3) if self.nchw_ else (1, 2)
            out = out.mean(axis=axes) if self.pooling == "avg" else out.max(axis=axes)
        elif out.ndim == 3:  # tokens (N, T, D)
            out = out.mean(axis=1)
        elif out.ndim != 2:
            raise WeightsError(
                f"onnx: output {self.output_name_!r} of {self.path} has shape {out.shape}; supported outputs "
                "are a vector (N, dim), tokens (N, T, dim) or a feature map, pooled"
            )
        return out.reshape(len(x), -1)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Normalise, run the model, pool, L2-normalise.

        Args:
            batch: array of shape (n, height, width, 3), RGB 0..255.

        Returns:
            float32 array of shape (n, dim), L2-normalised rows.
        """
        if self.session_ is None:
            raise RuntimeError("OnnxExtractor.build() must be called before embed()")
        h, w = self.input_hw_
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (h, w, 3):
            raise ValueError(f"onnx expects a batch of shape (n, {h}, {w}, 3), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(self._run(x))


def _detail(e: BaseException) -> str:
    return " ".join(str(e).split())[:300].rstrip(".") or type(e).__name__
