"""The demo deepfake classifier of ``facegraph models demo-classifier``: generated, not trained.

It scores "fake" as ``sigmoid(4 * (mean R - mean B))`` of the normalised face crop, so it shows how
a user's classifier plugs in (a Hugging Face export folder) without pretending to detect anything.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from facegraph.models.onnx_graph import GraphBuilder

RGB_CLASSIFIER = {
    "size": [64, 64],
    "mean": [0.4, 0.5, 0.6],
    "std": [0.2, 0.25, 0.3],
    "labels": ["real", "fake"],
}


def rgb_classifier() -> bytes:
    g = GraphBuilder()
    means = g.op("ReduceMean", "pixel_values", g.const([2, 3], np.int64), keepdims=0)  # (N, 3)
    fake = g.op("Mul", g.op("MatMul", means, g.const([[1.0], [0.0], [-1.0]])), g.const(4.0))
    logits = g.op("Concat", g.op("Mul", fake, g.const(0.0)), fake, axis=1)
    size = RGB_CLASSIFIER["size"]
    return g.model(
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size[1], size[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        {logits: "logits"},
    )


def write_hf_classifier(folder, labels: tuple[str, str] = ("real", "fake"), model: bytes | None = None) -> None:
    """Write the demo classifier (or ``model``, of the same I/O) as a Hugging Face export folder: how to plug one in."""
    import json
    from pathlib import Path

    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "onnx" / "model.onnx").write_bytes(rgb_classifier() if model is None else model)
    (folder / "config.json").write_text(json.dumps({"id2label": {str(i): label for i, label in enumerate(labels)}}, indent=1))
    size = RGB_CLASSIFIER["size"]
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True,
                "size": {"height": size[1], "width": size[0]},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": RGB_CLASSIFIER["mean"],
                "image_std": RGB_CLASSIFIER["std"],
            },
            indent=1,
        )
    )
