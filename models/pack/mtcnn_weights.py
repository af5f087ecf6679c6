"""MTCNN's P-Net, R-Net and O-Net rebuilt as ONNX graphs from the ``mtcnn`` 1.0.0 wheel's weights.

The wheel ships each network as a joblib pickle (lz4) of Keras ``get_weights()``
arrays in layer order (``mtcnn/network/{pnet,rnet,onet}.py``); nothing is
installed or imported from the package. Keras works in NHWC with HWIO kernels;
the graphs here are NCHW, so:

- conv kernels go HWIO -> OIHW;
- PReLU slopes shared over H and W, stored (1, 1, C), become (C, 1, 1);
- Keras "same" max-pooling is ONNX ``SAME_UPPER`` (the extra padding goes last);
- each network's Permute((2, 1, 3)) + Flatten reads NHWC as (N, W, H, C), so the
  NCHW tensor is transposed to that order before flattening;
- the class heads end in a softmax over the channel axis.

Inputs are RGB, NCHW, normalised as (pixel - 127.5) / 128, with H and W in image
orientation (1.0.0 does not transpose pictures, unlike the older 0.x releases).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegraph.models.errors import ModelLoadError

# (package, version, sha256 of mtcnn-1.0.0-py3-none-any.whl on PyPI).
MTCNN_WHEEL = ("mtcnn", "1.0.0", "0a96b4868e56db9ae984449519642be6dba03240e608a67e928ebb47833e9144")
OPSET = 17
IR_VERSION = 8  # the IR that goes with opset 17; older ONNX Runtime builds refuse newer IRs


@dataclass
class _Graph:
    """Builds one network, taking the Keras weight arrays in order and checking each shape."""

    name: str
    weights: list[np.ndarray]
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def _take(self, shape: tuple[int, ...], what: str) -> np.ndarray:
        if not self.weights:
            raise ModelLoadError(f"{self.name}: weights end before {what}")
        value = np.asarray(self.weights.pop(0), dtype=np.float32)
        if value.shape != shape:
            raise ModelLoadError(f"{self.name}: {what} has shape {value.shape}, expected {shape}")
        return value

    def _constant(self, value: np.ndarray) -> str:
        name = f"{self.name}.w{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def _node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or f"{self.name}.{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, out: str | None = None) -> str:
        kernel = self._take((k, k, c_in, c_out), f"conv {c_in}->{c_out} kernel").transpose(3, 2, 0, 1)
        bias = self._take((c_out,), f"conv {c_in}->{c_out} bias")
        return self._node("Conv", [x, self._constant(kernel), self._constant(bias)], out, kernel_shape=[k, k])

    def prelu(self, x: str, channels: int, spatial: bool = True) -> str:
        if spatial:
            slope = self._take((1, 1, channels), f"prelu({channels}) slope").reshape(channels, 1, 1)
        else:
            slope = self._take((channels,), f"prelu({channels}) slope")
        return self._node("PRelu", [x, self._constant(slope)])

    def max_pool(self, x: str, k: int, same: bool) -> str:
        pad = {"auto_pad": "SAME_UPPER"} if same else {}
        return self._node("MaxPool", [x], kernel_shape=[k, k], strides=[2, 2], **pad)

    def keras_flatten(self, x: str) -> str:
        return self._node("Flatten", [self._node("Transpose", [x], perm=[0, 3, 2, 1])], axis=1)

    def dense(self, x: str, n_in: int, n_out: int, out: str | None = None) -> str:
        kernel = self._take((n_in, n_out), f"dense {n_in}->{n_out} kernel")
        bias = self._take((n_out,), f"dense {n_in}->{n_out} bias")
        return self._node("Gemm", [x, self._constant(kernel), self._constant(bias)], out)

    def softmax(self, x: str, out: str) -> str:
        return self._node("Softmax", [x], out, axis=1)

    def model(self, input_shape: list, outputs: list[tuple[str, list]]) -> onnx.ModelProto:
        if self.weights:
            raise ModelLoadError(f"{self.name}: {len(self.weights)} weight arrays left over")
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegraph", ir_version=IR_VERSION
        )
        model.doc_string = f"MTCNN {self.name} from {MTCNN_WHEEL[0]}=={MTCNN_WHEEL[1]} (MIT); input RGB NCHW (x - 127.5) / 128"
        onnx.checker.check_model(model, full_check=True)
        return model


def pnet(weights: list[np.ndarray]) -> onnx.ModelProto:
    """Fully convolutional proposals: input (N, 3, H, W) -> bbox_reg (N, 4, h, w), prob (N, 2, h, w)."""
    g = _Graph("pnet", list(weights))
    x = g.max_pool(g.prelu(g.conv("input", 3, 10, 3), 10), 2, same=True)
    x = g.prelu(g.conv(x, 10, 16, 3), 16)
    x = g.prelu(g.conv(x, 16, 32, 3), 32)
    g.conv(x, 32, 4, 1, out="bbox_reg")
    g.softmax(g.conv(x, 32, 2, 1), "prob")
    return g.model(["N", 3, "H", "W"], [("bbox_reg", ["N", 4, "h", "w"]), ("prob", ["N", 2, "h", "w"])])


def rnet(weights: list[np.ndarray]) -> onnx.ModelProto:
    """Refinement on 24x24 crops: input (N, 3, 24, 24) -> bbox_reg (N, 4), prob (N, 2)."""
    g = _Graph("rnet", list(weights))
    x = g.max_pool(g.prelu(g.conv("input", 3, 28, 3), 28), 3, same=True)  # 22 -> 11
    x = g.max_pool(g.prelu(g.conv(x, 28, 48, 3), 48), 3, same=False)  # 9 -> 4
    x = g.keras_flatten(g.prelu(g.conv(x, 48, 64, 2), 64))  # 3 x 3 x 64 = 576
    x = g.prelu(g.dense(x, 576, 128), 128, spatial=False)
    g.dense(x, 128, 4, out="bbox_reg")
    g.softmax(g.dense(x, 128, 2), "prob")
    return g.model(["N", 3, 24, 24], [("bbox_reg", ["N", 4]), ("prob", ["N", 2])])


def onet(weights: list[np.ndarray]) -> onnx.ModelProto:
    """Output net on 48x48 crops: input (N, 3, 48, 48) -> bbox_reg (N, 4), landmarks (N, 10), prob (N, 2).

    ``landmarks`` holds x1..x5 then y1..y5 as fractions of the crop, in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (image left/right).
    """
    g = _Graph("onet", list(weights))
    x = g.max_pool(g.prelu(g.conv("input", 3, 32, 3), 32), 3, same=True)  # 46 -> 23
    x = g.max_pool(g.prelu(g.conv(x, 32, 64, 3), 64), 3, same=False)  # 21 -> 10
    x = g.max_pool(g.prelu(g.conv(x, 64, 64, 3), 64), 2, same=True)  # 8 -> 4
    x = g.keras_flatten(g.prelu(g.conv(x, 64, 128, 2), 128))  # 3 x 3 x 128 = 1152
    x = g.prelu(g.dense(x, 1152, 256), 256, spatial=False)
    g.dense(x, 256, 4, out="bbox_reg")
    g.dense(x, 256, 10, out="landmarks")
    g.softmax(g.dense(x, 256, 2), "prob")
    return g.model(["N", 3, 48, 48], [("bbox_reg", ["N", 4]), ("landmarks", ["N", 10]), ("prob", ["N", 2])])


def read_weights(wheel_path: Path) -> dict[str, list[np.ndarray]]:
    """The three Keras weight lists, read straight out of the wheel."""
    out = {}
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for name in ("pnet", "rnet", "onet"):
                # joblib picks the lz4 decompressor from the stream's magic bytes.
                out[name] = list(joblib.load(io.BytesIO(wheel.read(f"mtcnn/assets/weights/{name}.lz4"))))
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{wheel_path}: not an mtcnn 1.0.0 wheel with weights ({exc})") from exc
    return out


def convert_mtcnn(wheel_path: Path) -> dict[str, onnx.ModelProto]:
    """The three networks as checked ONNX models, keyed ``pnet``, ``rnet``, ``onet``."""
    weights = read_weights(Path(wheel_path))
    return {"pnet": pnet(weights["pnet"]), "rnet": rnet(weights["rnet"]), "onet": onet(weights["onet"])}
