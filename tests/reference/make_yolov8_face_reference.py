"""Regenerate tests/data/yolov8_face_reference.npz from Ultralytics predicting with the faithful YOLOv8-face model.

Ultralytics, torch (run on the CPU) and onnxruntime go into a throwaway virtualenv (never into the
project's); this script then calls itself inside it with ``--inner``. The model is
``tests/faithful/yolov8_face.py``'s seeded yolov8n-face layout, built here and handed
over as a file; the pictures (skimage's astronaut, then the photos in
``../shared/photos``) are decoded here (BGR, as ``cv2.imread`` gives) and handed over as
arrays, so the reference sees exactly the pixels whose sha256 the record keeps. Inside,
``YOLO(model, task="pose").predict(picture, imgsz=640, device="cpu")`` runs with
Ultralytics' default conf, iou and max_det.

The data file holds, per picture ``NAME`` (``astronaut`` or the photo's file name):
``NAME/boxes`` (n, 4) xyxy, ``NAME/conf`` (n,), ``NAME/kpts`` (n, 5, 2) xy and
``NAME/kpt_conf`` (n, 5), all float32 in original pixels, in Ultralytics' order; and a
``meta`` JSON record (command, versions, model and picture checksums, thresholds used).

Usage, from the repository root (needs ../shared/photos):
    .venv/bin/python tests/reference/make_yolov8_face_reference.py [--venv /tmp/facegraph-yolov8-face-ref]
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
PHOTOS = REPO.parent / "shared" / "photos"
PHOTO_NAMES = ("group-t1.jpg", "multiface.jpg", "angelina_jolie.jpg", "kate_siegel.jpg", "paul_rudd.jpg", "tom-hanks.png")
# torch 2.14.1 (a CUDA build, run on the CPU) with its torchvision: the only torchvision here (0.28.0) for the
# CPU-only torch 2.13.0+cpu wheel is a CUDA build whose NMS op cannot load against it, and without torchvision
# Ultralytics' warmup fails. onnxruntime as the project pins it (onnxruntime-gpu 1.31.1).
PACKAGES = ("ultralytics==8.4.190", "torch==2.14.1", "torchvision==0.29.1", "onnxruntime==1.31.1", "onnx==1.23.2")
VERSIONS_OF = ("ultralytics", "torch", "torchvision", "onnxruntime", "onnx", "numpy", "opencv-python")


def pictures() -> dict[str, np.ndarray]:
    """BGR uint8 pictures by name: the astronaut, then every photo (all of them: the recorder needs them)."""
    import cv2
    from skimage import data

    out = {"astronaut": np.ascontiguousarray(data.astronaut()[:, :, ::-1])}
    for name in PHOTO_NAMES:
        image = cv2.imread(str(PHOTOS / name))
        if image is None:
            raise FileNotFoundError(f"{PHOTOS / name} is missing or unreadable: the recorder needs every photo")
        out[name] = image
    return out


def outer(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.faithful.yolov8_face import yolov8_face_model

    started = time.time()
    python = ensure_venv(Path(args.venv), PACKAGES)
    model = yolov8_face_model()
    images = pictures()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "yolov8n-face.onnx"
        model_path.write_bytes(model)
        feed = Path(tmp) / "inputs.npz"
        result = Path(tmp) / "result.npz"
        np.savez(feed, model_path=np.array(str(model_path)), names=np.array(list(images)), **{f"picture_{i}": im for i, im in enumerate(images.values())})
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=str(Path(tmp) / "config"))
        subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", str(feed), str(result)], check=True, env=env)
        with np.load(result, allow_pickle=False) as got:
            out = {k: got[k] for k in got.files}
    inner_meta = json.loads(str(out.pop("inner_meta")))
    meta = {
        "command": "cd <repo> && .venv/bin/python tests/reference/make_yolov8_face_reference.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "reference_versions": inner_meta["versions"],
        "reference_python": inner_meta["python"],
        "generator_numpy": np.__version__,
        "model": "tests/faithful/yolov8_face.py yolov8_face_model() (static batch 1)",
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "pictures": list(images),
        "picture_sha256": {name: hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for name, im in images.items()},
        "picture_shapes": {name: list(im.shape) for name, im in images.items()},
        "picture_source": "astronaut: skimage.data.astronaut() RGB->BGR; photos: cv2.imread(../shared/photos/NAME) (BGR)",
        "call": "YOLO(model, task='pose').predict(bgr_picture, imgsz=640, device='cpu')",
        "used": inner_meta["used"],
        "counts": {name: int(out[f"{name}/conf"].shape[0]) for name in images},
        "layout": "per picture NAME: NAME/boxes (n,4) xyxy, NAME/conf (n,), NAME/kpts (n,5,2) xy, NAME/kpt_conf (n,5); "
        "float32, original pixels, Ultralytics' order (score descending after NMS)",
    }
    out["meta"] = np.array(json.dumps(meta))
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **out)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) in {meta['seconds']} s")
    print(json.dumps({k: meta[k] for k in ("reference_versions", "used", "counts")}, indent=1))


def inner(feed: Path, result: Path) -> None:
    """Runs inside the throwaway virtualenv: only numpy and the reference packages are importable here."""
    from importlib.metadata import version

    from ultralytics import YOLO

    out: dict[str, np.ndarray] = {}
    with np.load(feed, allow_pickle=False) as data:
        model = YOLO(str(data["model_path"]), task="pose")
        names = [str(n) for n in data["names"]]
        for i, name in enumerate(names):
            (found,) = model.predict(data[f"picture_{i}"], imgsz=640, device="cpu", verbose=False)
            out[f"{name}/boxes"] = found.boxes.xyxy.numpy().astype(np.float32)
            out[f"{name}/conf"] = found.boxes.conf.numpy().astype(np.float32)
            out[f"{name}/kpts"] = found.keypoints.xy.numpy().astype(np.float32)
            out[f"{name}/kpt_conf"] = found.keypoints.conf.numpy().astype(np.float32)
    args = model.predictor.args
    used = {
        "conf": args.conf,
        "iou": args.iou,
        "max_det": args.max_det,
        "imgsz": list(model.predictor.imgsz),
        "agnostic_nms": args.agnostic_nms,
        "task": model.task,
        "backend": type(model.predictor.model.backend).__name__,
        "backend_dynamic": bool(model.predictor.model.dynamic),
        "kpt_shape": list(model.predictor.model.kpt_shape),
        "torchvision_nms": "torchvision" in sys.modules,
    }
    meta = {"versions": {name: version(name) for name in VERSIONS_OF}, "python": sys.version.split()[0], "used": used}
    out["inner_meta"] = np.array(json.dumps(meta))
    np.savez(result, **out)


def main() -> None:
    cli(__doc__, "/tmp/facegraph-yolov8-face-ref", "ultralytics + torch (on the CPU)", REPO / "tests" / "data" / "yolov8_face_reference.npz", outer, inner)


if __name__ == "__main__":
    main()
