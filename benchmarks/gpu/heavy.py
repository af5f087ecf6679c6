"""Heavier models built in code with random weights, so the GPU benchmark prices what users bring.

No such weights can be downloaded here. What matters for a speed measurement is the
shape of the work, not the values: an ArcFace-shaped recognizer (insightface's
IResNet-50 layout: 112 x 112 in, 512 out, stages of 3, 4, 14 and 3 residual blocks)
and a ViT-B/16-shaped classifier (224 x 224 in, 16 px patches, 12 layers of width 768,
12 heads, MLP 3072, two classes). ``scale`` shrinks both for the CPU dry run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


@dataclass
class _Builder:
    seed: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def weight(self, *shape: int, fan_in: int | None = None) -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        value = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return self.const(value)

    def const(self, value) -> str:
        name = f"w{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or f"{op_type.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{len(self.nodes)}", **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> str:
        pad = k // 2
        return self.op("Conv", x, self.weight(c_out, c_in, k, k), self.const(np.zeros(c_out, np.float32)), kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def prelu(self, x: str, channels: int) -> str:
        return self.op("PRelu", x, self.const(np.full((channels, 1, 1), 0.25, np.float32)))

    def model(self, name: str, inputs, outputs) -> bytes:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegraph", ir_version=IR_VERSION)
        onnx.checker.check_model(model)
        return model.SerializeToString()


def arcface_shaped(scale: float = 1.0, seed: int = 1) -> bytes:
    """IResNet-50-shaped recognizer: ``input.1`` (N, 3, 112, 112) -> ``embedding`` (N, 512)."""
    b = _Builder(seed)
    widths = [max(4, int(c * scale)) for c in (64, 128, 256, 512)]
    blocks = (3, 4, 14, 3) if scale >= 1 else (1, 1, 1, 1)
    x = b.prelu(b.conv("input.1", 3, widths[0]), widths[0])
    c_in = widths[0]
    for width, count in zip(widths, blocks):
        for i in range(count):
            stride = 2 if i == 0 else 1
            y = b.prelu(b.conv(x, c_in, width), width)
            y = b.conv(y, width, width, stride=stride)
            shortcut = b.conv(x, c_in, width, k=1, stride=stride) if (stride != 1 or c_in != width) else x
            x, c_in = b.op("Add", y, shortcut), width
    flat = b.op("Flatten", x, axis=1)  # 7 x 7 x 512 at full scale
    features = c_in * 7 * 7
    embedding = max(8, int(512 * scale))
    b.op("Gemm", flat, b.weight(embedding, features, fan_in=features), b.const(np.zeros(embedding, np.float32)), out="embedding", transB=1)
    return b.model(
        "arcface_shaped",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", embedding])],
    )


def vit_shaped(scale: float = 1.0, seed: int = 2) -> bytes:
    """ViT-B/16-shaped classifier: ``pixel_values`` (N, 3, 224, 224) -> ``logits`` (N, 2)."""
    b = _Builder(seed)
    dim = max(16, int(768 * scale)) // 4 * 4
    heads = 12 if scale >= 1 else 2
    depth = 12 if scale >= 1 else 2
    mlp = dim * 4
    tokens = 14 * 14 + 1
    head_dim = dim // heads
    patches = b.op("Conv", "pixel_values", b.weight(dim, 3, 16, 16), b.const(np.zeros(dim, np.float32)), kernel_shape=[16, 16], strides=[16, 16])
    seq = b.op("Transpose", b.op("Reshape", patches, b.const(np.array([0, dim, -1], np.int64))), perm=[0, 2, 1])  # N, 196, D
    batch_cls = b.op("Expand", b.const(np.zeros((1, 1, dim), np.float32)), b.op("Concat", b.op("Slice", b.op("Shape", seq), b.const(np.array([0], np.int64)), b.const(np.array([1], np.int64))), b.const(np.array([1, dim], np.int64)), axis=0))
    x = b.op("Add", b.op("Concat", batch_cls, seq, axis=1), b.const((b.rng.standard_normal((1, tokens, dim)) * 0.02).astype(np.float32)))
    ones, zeros = np.ones(dim, np.float32), np.zeros(dim, np.float32)

    def norm(v: str) -> str:
        return b.op("LayerNormalization", v, b.const(ones), b.const(zeros), axis=-1, epsilon=1e-6)

    def linear(v: str, n_in: int, n_out: int) -> str:
        return b.op("Add", b.op("MatMul", v, b.weight(n_in, n_out, fan_in=n_in)), b.const(np.zeros(n_out, np.float32)))

    def split_heads(v: str) -> str:  # N, T, D -> N, H, T, d
        return b.op("Transpose", b.op("Reshape", v, b.const(np.array([0, tokens, heads, head_dim], np.int64))), perm=[0, 2, 1, 3])

    for _ in range(depth):
        h = norm(x)
        q, k, v = (split_heads(linear(h, dim, dim)) for _ in range(3))
        scores = b.op("Softmax", b.op("Mul", b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2])), b.const(np.float32(1 / np.sqrt(head_dim)))), axis=-1)
        attended = b.op("Reshape", b.op("Transpose", b.op("MatMul", scores, v), perm=[0, 2, 1, 3]), b.const(np.array([0, tokens, dim], np.int64)))
        x = b.op("Add", x, linear(attended, dim, dim))
        h = linear(norm(x), dim, mlp)
        gelu = b.op("Mul", b.op("Mul", h, b.const(np.float32(0.5))), b.op("Add", b.op("Erf", b.op("Div", h, b.const(np.float32(np.sqrt(2))))), b.const(np.float32(1))))
        x = b.op("Add", x, linear(gelu, mlp, dim))
    cls = b.op("Squeeze", b.op("Slice", norm(x), b.const(np.array([0], np.int64)), b.const(np.array([1], np.int64)), b.const(np.array([1], np.int64))), b.const(np.array([1], np.int64)))
    b.op("Add", b.op("MatMul", cls, b.weight(dim, 2, fan_in=dim)), b.const(np.zeros(2, np.float32)), out="logits")
    return b.model(
        "vit_shaped",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
    )
