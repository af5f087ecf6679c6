"""Regenerate tests/data/insightface_reference.npz: insightface 0.7.3's own answers on faithful SCRFD and ArcFace files.

The models are rebuilt by ``tests/faithful/insightface.py`` (seeded: the same bytes each
time); insightface, its ONNX Runtime and OpenCV go into a throwaway virtualenv, and this
script calls itself inside it with ``--inner``. ``FaceAnalysis`` (which runs insightface's
``RetinaFace`` class on unbatched SCRFD files) answers for ``det_10g`` with each recognizer
and for every unbatched detector alone; the ``SCRFD`` class for batched files. Pictures: the
scikit-image astronaut and every picture in ``../shared/photos`` (needed here; the tests
skip those cases where the folder is absent).

Usage, from the repository root:
    .venv/bin/python tests/reference/make_insightface_reference.py [--venv /tmp/facegraph-insightface-ref]
"""

from __future__ import annotations

import argparse
import hashlib
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
PACKAGES = ("numpy", "cython", "setuptools", "wheel")
# insightface 0.7.3 is an sdist with a Cython extension: built against the numpy installed first.
REFERENCE = ("insightface==0.7.3", "onnxruntime==1.31.1", "opencv-python-headless==5.0.0.93")
VERSIONS_OF = ("insightface", "onnxruntime", "opencv-python-headless", "numpy", "scikit-image")


def sha(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()).hexdigest()


def outer(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.faithful.home import DETECTORS, RECOGNIZERS, reference_pictures

    started = time.time()
    python = ensure_venv(Path(args.venv), PACKAGES, ["--no-build-isolation", *REFERENCE])
    pictures = reference_pictures(require_photos=True)
    detectors = {name: build() for name, build in DETECTORS.items()}
    recognizers = {name: build() for name, build in RECOGNIZERS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        feed, result = Path(tmp) / "feed.npz", Path(tmp) / "result.npz"
        arrays = {f"picture_{n}": bgr for n, bgr in pictures.items()}
        arrays.update({f"det_{n}": np.frombuffer(b, np.uint8) for n, b in detectors.items()})
        arrays.update({f"rec_{n}": np.frombuffer(b, np.uint8) for n, b in recognizers.items()})
        np.savez(feed, **arrays)
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2")
        subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", str(feed), str(result)], check=True, env=env)
        with np.load(result, allow_pickle=False) as got:
            out = {k: got[k] for k in got.files}
    inner_meta = json.loads(str(out.pop("inner_meta")))
    meta = {
        "command": "cd <repo> && .venv/bin/python tests/reference/make_insightface_reference.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "reference_versions": inner_meta["versions"],
        "reference_python": inner_meta["python"],
        "runs": inner_meta["runs"],
        "models_sha256": {f"det_{n}": sha(b) for n, b in detectors.items()} | {f"rec_{n}": sha(b) for n, b in recognizers.items()},
        "pictures_sha256": {n: sha(bgr) for n, bgr in pictures.items()},
        "layout": "per run and picture: <run>__<picture>__boxes (N, 4) x1 y1 x2 y2, __scores (N,), __kps (N, 5, 2), "
        "__embeddings (N, 512) float16 L2-normalised, all in original pixels, in insightface's order",
        "faces": {k[: -len("__scores")]: int(v.shape[0]) for k, v in out.items() if k.endswith("__scores")},
    }
    out["meta"] = np.array(json.dumps(meta))
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **out)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) in {meta['seconds']} s")
    print(json.dumps({k: meta[k] for k in ("reference_versions", "faces")}, indent=1))


def inner(feed: Path, result: Path) -> None:
    """Runs inside the throwaway virtualenv: numpy, insightface and its dependencies only."""
    import platform
    from importlib.metadata import version

    from insightface.app import FaceAnalysis
    from insightface.model_zoo import get_model
    from insightface.model_zoo.scrfd import SCRFD

    out: dict[str, np.ndarray] = {}
    runs: dict[str, str] = {}
    with np.load(feed, allow_pickle=False) as data:
        pictures = {k[len("picture_") :]: data[k] for k in data.files if k.startswith("picture_")}
        models = {k: data[k].tobytes() for k in data.files if not k.startswith("picture_")}
    root = Path(tempfile.mkdtemp())

    def pack(name: str, files: dict[str, bytes]) -> None:
        folder = root / "models" / name
        folder.mkdir(parents=True)
        for file, blob in files.items():
            (folder / file).write_bytes(blob)

    def record(run: str, picture: str, boxes, scores, kps, embeddings=None) -> None:
        key = f"{run}__{picture}"
        out[f"{key}__boxes"] = np.asarray(boxes, np.float32).reshape(-1, 4)
        out[f"{key}__scores"] = np.asarray(scores, np.float32).reshape(-1)
        if kps is not None:
            out[f"{key}__kps"] = np.asarray(kps, np.float32).reshape(-1, 5, 2)
        if embeddings is not None:
            e = np.asarray(embeddings, np.float64).reshape(len(out[f"{key}__scores"]), -1)
            out[f"{key}__embeddings"] = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float16)

    def analyse(run: str, app, max_num: int = 0, embed: bool = True) -> None:
        for picture, bgr in pictures.items():
            faces = app.get(bgr, max_num=max_num)
            record(
                run,
                picture,
                [f.bbox for f in faces],
                [f.det_score for f in faces],
                [f.kps for f in faces] if faces and faces[0].kps is not None else (np.zeros((0, 5, 2)) if not faces else None),
                [f.embedding for f in faces] if embed else None,
            )

    for rec in (k for k in models if k.startswith("rec_")):
        name = f"det_10g+{rec[4:]}"
        pack(name, {"1_det.onnx": models["det_det_10g"], "2_rec.onnx": models[rec]})
        app = FaceAnalysis(name=name, root=str(root), providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=-1, det_size=(640, 640))
        analyse(f"analysis_{rec[4:]}", app)
        runs[f"analysis_{rec[4:]}"] = f"FaceAnalysis(det_10g + {rec[4:]}).prepare(ctx_id=-1, det_size=(640, 640)).get(bgr)"
        if rec == "rec_w600k_r50":
            analyse("analysis_cap3", app, max_num=3, embed=False)
            runs["analysis_cap3"] = "the same FaceAnalysis(det_10g + w600k_r50).get(bgr, max_num=3)"
    for det in (k for k in models if k.startswith("det_")):
        blob, name = models[det], det[4:]
        file = root / f"{name}.onnx"
        file.write_bytes(blob)
        probe = get_model(str(file), providers=["CPUExecutionProvider"])
        if len(probe.session.get_outputs()[0].shape) == 3:
            detector = SCRFD(model_file=str(file))
            detector.prepare(-1, input_size=(640, 640), det_thresh=0.5)
            for picture, bgr in pictures.items():
                det_rows, kpss = detector.detect(bgr)
                record(f"detect_{name}", picture, det_rows[:, :4], det_rows[:, 4], kpss)
            runs[f"detect_{name}"] = "SCRFD(model_file).prepare(-1, input_size=(640, 640), det_thresh=0.5).detect(bgr)"
        else:
            pack(f"only_{name}", {"det.onnx": blob})
            app = FaceAnalysis(name=f"only_{name}", root=str(root), allowed_modules=["detection"], providers=["CPUExecutionProvider"])
            app.prepare(ctx_id=-1, det_size=(640, 640))
            analyse(f"detect_{name}", app, embed=False)
            runs[f"detect_{name}"] = f"FaceAnalysis({name} only).prepare(ctx_id=-1, det_size=(640, 640)).get(bgr)"
    versions = {name: version(name) for name in VERSIONS_OF}
    out["inner_meta"] = np.array(json.dumps({"versions": versions, "python": platform.python_version(), "runs": runs}))
    np.savez(result, **out)


def main() -> None:
    cli(__doc__, "/tmp/facegraph-insightface-ref", "insightface", REPO / "tests" / "data" / "insightface_reference.npz", outer, inner)


if __name__ == "__main__":
    main()
