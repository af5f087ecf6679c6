"""Small ONNX graphs written in code: the doctor's probe, the demo classifier, and tests' fixture models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = [helper.make_opsetid("", 18)]


class GraphBuilder:
    """A tiny ONNX builder so graphs read as arithmetic: numbered names, constants, one node per call.

    The class attributes name what a serialized model carries; subclasses that build other
    families of test models set their own (their files' bytes depend on them).
    """

    const_prefix = "c"
    graph_name = "fixture"
    producer = "facegraph-fixtures"
    opset = OPSET

    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, value, dtype=np.float32) -> str:
        name = self.name(self.const_prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, node_name: str | None = None, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def model(self, inputs, outputs, renames: dict[str, str], metadata: dict[str, str] | None = None) -> bytes:
        for src, dst in renames.items():
            self.nodes.append(helper.make_node("Identity", [src], [dst]))
        graph = helper.make_graph(self.nodes, self.graph_name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=self.opset, producer_name=self.producer)
        model.ir_version = 8
        for key, value in (metadata or {}).items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        onnx.checker.check_model(model)
        return model.SerializeToString()
