"""A small ONNX graph builder for seeded convolutional nets (weights from a fixed numpy seed: same bytes every build)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.fixture_models import GraphBuilder


class Net(GraphBuilder):
    """Nodes and initializers of one graph, with He-initialised convolutions from one seed."""

    const_prefix = "w"
    graph_name = "faithful"
    producer = "facegraph-tests"
    opset = [helper.make_opsetid("", 17)]

    def __init__(self, seed: int):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def conv(
        self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, gain: float = 1.0, bias=0.0, noise: float = 0.1, zero_mean: bool = False
    ) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))
        if zero_mean:  # respond to edges and colour contrast, not to overall brightness
            w -= w.mean(axis=(1, 2, 3), keepdims=True)
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


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
