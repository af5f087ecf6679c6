"""A converter from TensorFlow Lite flatbuffers to ONNX for the float convolutional nets the pack ships.

It covers the operators MediaPipe's BlazeFace detectors use (CONV_2D,
DEPTHWISE_CONV_2D, RELU, ADD, PAD, MAX_POOL_2D, RESIZE_BILINEAR, RESHAPE,
CONCATENATION, DEQUANTIZE of float16 weights) and refuses anything else by
name. The flatbuffer is read with the ``tflite`` schema package; TensorFlow is
never needed.

TFLite works in NHWC; the ONNX graph is NCHW with a dynamic batch. Every 4-D
activation is held as NCHW, so axes and paddings are mapped, kernels go
OHWI -> OIHW (depthwise: 1HW(C*m) -> (C*m)1HW with ``group=C``), and a reshape
of a 4-D tensor first transposes it back to NHWC, so the flattened order is
TFLite's. Float16 weights behind DEQUANTIZE become float32 initializers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegraph.models.errors import ModelLoadError

OPSET = 17
IR_VERSION = 8

# TFLite enum values (schema.fbs): tensor types, paddings, fused activations.
_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_SAME, _VALID = 0, 1
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


@dataclass
class _Converter:
    model: object  # tflite.Model
    graph: object  # tflite.SubGraph
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    constants: dict[int, np.ndarray] = field(default_factory=dict)
    # TFLite tensor index -> ONNX value name, for activations.
    values: dict[int, str] = field(default_factory=dict)

    def tensor(self, index: int):
        return self.graph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).ShapeAsNumpy()]

    def buffer_array(self, index: int) -> np.ndarray | None:
        tensor = self.tensor(index)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        dtype = _TYPES.get(tensor.Type())
        if dtype is None:
            raise ModelLoadError(f"tensor {tensor.Name().decode()}: unsupported TFLite type {tensor.Type()}")
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.shape(index))

    def constant(self, index: int) -> np.ndarray:
        if index not in self.constants:
            value = self.buffer_array(index)
            if value is None:
                raise ModelLoadError(f"tensor {self.tensor(index).Name().decode()} should be a constant and has no data")
            self.constants[index] = value
        return self.constants[index]

    def initializer(self, value: np.ndarray, hint: str) -> str:
        name = f"{hint}.{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or f"{op.lower()}.{len(self.nodes)}"
        # Named nodes: tools that insert nodes (the float16 converter's casts) derive names from them.
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out

    def activation(self, x: str, fused: int) -> str:
        if fused == 0:
            return x
        if fused == 1:
            return self.node("Relu", [x])
        if fused == 3:
            return self.node("Clip", [x, self.initializer(np.float32(0), "lo"), self.initializer(np.float32(6), "hi")])
        raise ModelLoadError(f"unsupported fused activation {fused}")

    def conv_pads(self, padding: int, kernel: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int], in_hw) -> list[int]:
        """Explicit ONNX pads for TFLite's SAME (extra padding after, as TensorFlow does) or VALID."""
        if padding == _VALID:
            return [0, 0, 0, 0]
        before, after = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after


def _options(op, cls):
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def convert_tflite(buffer: bytes, doc: str = "") -> onnx.ModelProto:
    """One float TFLite model (a single subgraph, one NHWC image input) as a checked ONNX model.

    The input becomes ``input`` (N, C, H, W); outputs keep their TFLite names unless
    the caller renames them.
    """
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(buffer, 0)
    if model.SubgraphsLength() != 1:
        raise ModelLoadError(f"expected one subgraph, found {model.SubgraphsLength()}")
    c = _Converter(model, model.Subgraphs(0))
    g = c.graph
    if g.InputsLength() != 1 or len(c.shape(g.Inputs(0))) != 4:
        raise ModelLoadError("expected one NHWC image input")
    input_index = g.Inputs(0)
    _, height, width, channels = c.shape(input_index)
    c.values[input_index] = "input"
    # Which values are held NCHW (every 4-D activation) and which keep TFLite's layout.
    nchw = {input_index}

    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [int(t) for t in op.InputsAsNumpy()]
        (out_index,) = [int(t) for t in op.OutputsAsNumpy()]
        out_name = c.tensor(out_index).Name().decode()
        out_shape = c.shape(out_index)
        if name == "DEQUANTIZE":
            source = c.constant(ins[0])
            if source.dtype != np.float16:
                raise ModelLoadError(f"{out_name}: only float16 weights can be dequantized, found {source.dtype}")
            c.constants[out_index] = source.astype(np.float32)
            continue
        x = c.values.get(ins[0])
        if x is None:
            raise ModelLoadError(f"operator {i} ({name}) reads {c.tensor(ins[0]).Name().decode()}, which nothing produced")
        in_shape = c.shape(ins[0])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            opt = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            kernel = c.constant(ins[1]).astype(np.float32)
            bias = c.constant(ins[2]).astype(np.float32) if len(ins) > 2 and ins[2] >= 0 else np.zeros(kernel.shape[0 if not depthwise else 3], np.float32)
            groups = 1
            if depthwise:
                groups = in_shape[3]
                kernel = kernel.transpose(3, 0, 1, 2)  # 1 H W C*m -> C*m 1 H W
            else:
                kernel = kernel.transpose(0, 3, 1, 2)  # O H W I -> O I H W
            strides = (opt.StrideH(), opt.StrideW())
            dilations = (opt.DilationHFactor(), opt.DilationWFactor())
            pads = c.conv_pads(opt.Padding(), kernel.shape[2:], strides, dilations, in_shape[1:3])
            y = c.node(
                "Conv",
                [x, c.initializer(kernel, "kernel"), c.initializer(bias, "bias")],
                kernel_shape=list(kernel.shape[2:]),
                strides=list(strides),
                dilations=list(dilations),
                pads=pads,
                group=groups,
            )
            y = c.activation(y, opt.FusedActivationFunction())
        elif name == "RELU":
            y = c.node("Relu", [x])
        elif name == "ADD":
            other = c.values.get(ins[1])
            if other is None:
                raise ModelLoadError(f"operator {i} (ADD) with a constant operand is not supported")
            y = c.activation(c.node("Add", [x, other]), _options(op, tflite.AddOptions).FusedActivationFunction())
        elif name == "PAD":
            pads = c.constant(ins[1]).astype(np.int64)  # (4, 2) in N H W C order
            order = [0, 3, 1, 2]
            onnx_pads = np.concatenate([pads[order, 0], pads[order, 1]])
            y = c.node("Pad", [x, c.initializer(onnx_pads, "pads"), c.initializer(np.float32(0), "zero")], mode="constant")
        elif name == "MAX_POOL_2D":
            opt = _options(op, tflite.Pool2DOptions)
            kernel = (opt.FilterHeight(), opt.FilterWidth())
            strides = (opt.StrideH(), opt.StrideW())
            pads = c.conv_pads(opt.Padding(), kernel, strides, (1, 1), in_shape[1:3])
            y = c.activation(c.node("MaxPool", [x], kernel_shape=list(kernel), strides=list(strides), pads=pads), opt.FusedActivationFunction())
        elif name == "RESIZE_BILINEAR":
            opt = _options(op, tflite.ResizeBilinearOptions)
            size = c.constant(ins[1]).astype(np.int64)
            scales = np.array([1, 1, size[0] / in_shape[1], size[1] / in_shape[2]], np.float32)
            mode = "align_corners" if opt.AlignCorners() else "half_pixel" if opt.HalfPixelCenters() else "asymmetric"
            y = c.node("Resize", [x, "", c.initializer(scales, "scales")], mode="linear", coordinate_transformation_mode=mode)
        elif name == "RESHAPE":
            if ins[0] in nchw:
                x = c.node("Transpose", [x], perm=[0, 2, 3, 1])
            target = np.array([-1, *out_shape[1:]], np.int64)  # the batch stays dynamic
            y = c.node("Reshape", [x, c.initializer(target, "shape")])
        elif name == "CONCATENATION":
            opt = _options(op, tflite.ConcatenationOptions)
            axis = opt.Axis() % len(in_shape)
            if ins[0] in nchw:
                axis = _NHWC_TO_NCHW_AXIS[axis]
            parts = [c.values[t] for t in ins]
            y = c.activation(c.node("Concat", parts, axis=axis), opt.FusedActivationFunction())
        else:
            raise ModelLoadError(f"TFLite operator {name} is not supported by this converter")
        c.values[out_index] = y
        if len(out_shape) == 4 and name != "RESHAPE":
            nchw.add(out_index)

    outputs = []
    for k in range(g.OutputsLength()):
        index = g.Outputs(k)
        name = c.tensor(index).Name().decode()
        if index in nchw:
            raise ModelLoadError(f"output {name} is a 4-D activation; only reshaped outputs are supported")
        c.node("Identity", [c.values[index]], name)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *c.shape(index)[1:]]))
    graph = helper.make_graph(
        c.nodes,
        "tflite",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, height, width])],
        outputs,
        c.initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegraph", ir_version=IR_VERSION)
    onnx_model.doc_string = doc
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model
