"""A small ONNX graph builder for seeded convolutional nets (weights from a fixed numpy seed: same bytes every build)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


class Net:
    """Nodes and initializers of one graph, with He-initialised convolutions from one seed."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, value, dtype=np.float32) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, node_name: str | None = None, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name or "", **attrs))
        return out

    def conv(
        self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, gain: float = 1.0, bias: float = 0.0, noise: float = 0.1
    ) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))
        b = self.rng.standard_normal(cout) * noise + bias
        return self.op("Conv", x, self.const(w), self.const(b), kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def normalised(self, x: str, channels: int, gain: float, bias: float) -> str:
        """Each channel standardised over the picture, then ``gain * z + bias``: a share of cells set by ``bias``, whatever the net."""
        return self.op("InstanceNormalization", x, self.const(np.full(channels, gain)), self.const(np.full(channels, bias)), epsilon=1e-5)

    def relu_conv(self, x: str, cin: int, cout: int, stride: int) -> str:
        return self.op("Relu", self.conv(x, cin, cout, 3, stride))

    def pyramid(self, x: str, strides: tuple[int, ...], width: int = 16) -> dict[int, str]:
        """Feature maps (N, width, H/s, W/s) for each stride in ``strides`` (powers of two from 8)."""
        feats, stride, cin = {}, 1, 3
        while stride < max(strides):
            x = self.relu_conv(x, cin, width, 2)
            cin, stride = width, stride * 2
            if stride in strides:
                feats[stride] = x
        return feats

    def rows(self, x: str, k: int, batched: bool) -> str:
        """(N, A*k, h, w) head -> (N, h*w*A, k) rows (or (h*w*A, k) without the batch axis)."""
        t = self.op("Transpose", x, perm=[0, 2, 3, 1])
        return self.op("Reshape", t, self.const([0, -1, k] if batched else [-1, k], np.int64))

    def model(self, inputs, outputs, renames: dict[str, str], metadata: dict[str, str] | None = None) -> bytes:
        for src, dst in renames.items():
            self.nodes.append(helper.make_node("Identity", [src], [dst]))
        graph = helper.make_graph(self.nodes, "faithful", inputs, outputs, self.inits)
        proto = helper.make_model(graph, opset_imports=OPSET, producer_name="facegraph-tests")
        proto.ir_version = 8
        for key, value in (metadata or {}).items():
            proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        onnx.checker.check_model(proto)
        return proto.SerializeToString()


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
