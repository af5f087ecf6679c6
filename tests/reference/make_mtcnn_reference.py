"""Regenerate tests/data/mtcnn_reference.npz from the ``mtcnn`` 1.0.0 package running on TensorFlow.

The package and TensorFlow go into a throwaway virtualenv (never into the
project's); this script then calls itself inside it with ``--inner``. Network
inputs are built from seeds and pictures by ``tests/mtcnn_pack.py``; the data
file holds the reference outputs, the detections, the pictures OpenCV cut for the
inputs (``input__*``, uint8, so the tests need not cut them again with another
OpenCV) and a ``meta`` JSON record (command, package versions, seeds, shapes,
input checksums).

Usage, from the repository root:
    .venv/bin/python tests/reference/make_mtcnn_reference.py [--venv /tmp/facegraph-mtcnn-ref]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from throwaway import cli, ensure_venv

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mtcnn==1.0.0", "tensorflow-cpu==2.21.0")
VERSIONS_OF = ("mtcnn", "tensorflow-cpu", "keras", "numpy", "joblib", "lz4")


def outer(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.mtcnn_pack import RANDOM_INPUTS, astronaut_variants, input_pictures, lfw_onet_inputs, network_inputs
    from tests.pack import input_pictures_note, write_reference

    started = time.time()
    python = ensure_venv(Path(args.venv), PACKAGES)
    pictures = input_pictures()
    inputs = network_inputs(pictures)
    variants = astronaut_variants()
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "inputs.npz"
        result = Path(tmp) / "result.npz"
        arrays = {f"{net}_{i}": x.transpose(0, 2, 3, 1) for net, xs in inputs.items() for i, x in enumerate(xs)}
        arrays.update({f"picture_{name}": image for name, (image, _) in variants.items()})
        np.savez(feed, **arrays)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", str(feed), str(result)], check=True, env=env)
        with np.load(result, allow_pickle=False) as got:
            out = {k: got[k] for k in got.files}
    inner_meta = json.loads(str(out.pop("inner_meta")))
    labels = lfw_onet_inputs()[1]
    lfw_prob = out[f"onet_{len(inputs['onet']) - 1}_prob"][:, 1]
    meta = {
        "command": "cd <repo> && .venv/bin/python tests/reference/make_mtcnn_reference.py"
        + "".join(f" {a}" for a in sys.argv[1:]),
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "reference_versions": inner_meta["versions"],
        "reference_python": inner_meta["python"],
        "generator_numpy": np.__version__,
        "random_inputs": {net: [{"seed": seed, "shape_nchw": list(shape)} for seed, shape in cases] for net, cases in RANDOM_INPUTS.items()},
        "inputs": {
            net: [{"shape_nchw": list(x.shape), "sum": float(x.astype(np.float64).sum())} for x in xs] for net, xs in inputs.items()
        },
        "input_order": "per network: the seeded random inputs, then astronaut inputs (pnet: resized picture; rnet/onet: "
        "jittered face crops); onet's last input is skimage lfw_subset (100 faces then 100 non-faces)",
        "outputs_layout": "NCHW for pnet outputs; prob is softmax (not face, face)",
        "detections_layout": "per picture: rows of x1 y1 x2 y2 confidence, landmarks x1..x5 y1..y5 (package order: "
        "left eye, right eye, nose, mouth left, mouth right), from detect_faces(box_format='xyxy', output_type='numpy')",
        "astronaut_box_xywh": inner_meta["astronaut_json"][0]["box"] if inner_meta["astronaut_json"] else None,
        "astronaut_json": inner_meta["astronaut_json"],
        "reference_lfw_onet_accuracy": float(((lfw_prob > 0.5).astype(np.int64) == labels).mean()),
        "input_pictures": input_pictures_note(pictures),
    }
    write_reference(Path(args.out), out, meta, pictures)
    print(json.dumps({k: meta[k] for k in ("reference_versions", "astronaut_box_xywh", "reference_lfw_onet_accuracy")}, indent=1))


def inner(feed: Path, result: Path) -> None:
    """Runs inside the throwaway virtualenv: only numpy and the package are importable here."""
    from importlib.metadata import version

    from mtcnn import MTCNN

    detector = MTCNN(device="CPU:0")
    models = {"pnet": detector.get_stage(stage_id=1).model, "rnet": detector.get_stage(stage_id=2).model, "onet": detector.get_stage(stage_id=3).model}
    names = {"pnet": ("bbox_reg", "prob"), "rnet": ("bbox_reg", "prob"), "onet": ("bbox_reg", "landmarks", "prob")}
    out: dict[str, np.ndarray] = {}
    meta: dict = {"versions": {name: version(name) for name in VERSIONS_OF}, "python": sys.version.split()[0]}
    with np.load(feed, allow_pickle=False) as data:
        for key in data.files:
            if key.startswith("picture_"):
                continue
            net = key.split("_")[0]
            outputs = models[net](data[key].astype(np.float32), training=False)
            for name, value in zip(names[net], outputs):
                value = np.asarray(value, np.float32)
                out[f"{key}_{name}"] = value.transpose(0, 3, 1, 2) if value.ndim == 4 else value
        for key in data.files:
            if key.startswith("picture_"):
                picture = data[key]
                rows = detector.detect_faces(picture, box_format="xyxy", output_type="numpy")
                out[f"detections_{key[len('picture_'):]}"] = np.asarray(rows, np.float32).reshape(-1, 16)[:, 1:]
                if key == "picture_original":
                    found = detector.detect_faces(picture)
                    meta["astronaut_json"] = [
                        {"box": [int(v) for v in f["box"]], "confidence": float(f["confidence"]),
                         "keypoints": {k: [int(v) for v in p] for k, p in f["keypoints"].items()}}
                        for f in found
                    ]
    out["inner_meta"] = np.array(json.dumps(meta))
    np.savez(result, **out)


def store_inputs(path: Path) -> None:
    """Add the input pictures to a file recorded before the file kept them (run with the OpenCV it was recorded with)."""
    sys.path.insert(0, str(REPO))
    from tests.mtcnn_pack import input_pictures, network_inputs
    from tests.pack import load_reference, store_input_pictures

    recorded = load_reference(path)["meta"]["inputs"]
    pictures = input_pictures()
    inputs = network_inputs(pictures)
    where = {key: (key.split("_")[0], int(key.split("_")[1])) for key in pictures}
    store_input_pictures(
        path,
        pictures,
        {key: inputs[net][i] for key, (net, i) in where.items()},
        {key: recorded[net][i]["sum"] for key, (net, i) in where.items()},
    )


def main() -> None:
    cli(__doc__, "/tmp/facegraph-mtcnn-ref", "mtcnn + TensorFlow", REPO / "tests" / "data" / "mtcnn_reference.npz", outer, inner, store_inputs)


if __name__ == "__main__":
    main()
