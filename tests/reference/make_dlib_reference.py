"""Record dlib's own outputs as test data for the dlib-resnet parity tests.

Run from the repository root (takes ~10 minutes the first time: dlib compiles):

    .venv/bin/python tests/reference/make_dlib_reference.py

It makes a throwaway virtualenv (/tmp/facegraph-dlib-ref) with dlib, numpy and
scikit-image, re-runs itself there, and writes tests/data/dlib_reference.npz:
dlib's descriptor for a seeded random chip and for each picture's chip (network
parity), and dlib's full pipeline (HOG detector, 5-point shape predictor, face
chip with padding 0.25, no jitter) on skimage's astronaut and cameraman (grey
copied to RGB), with the boxes, the 5 landmarks and get_face_chip_details' chip
rectangle and angle. The 68-point predictor is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENV = Path("/tmp/facegraph-dlib-ref")
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "dlib_reference.npz"
SEED = 20261124
COMMAND = ".venv/bin/python tests/reference/make_dlib_reference.py"


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy", "scikit-image", "dlib"], check=True)
    return python


def sdist() -> Path:
    sys.path.insert(0, str(ROOT))
    from facegraph.graph.config import default_cache_dir
    from facegraph.models.pack.build import fetch, pack_models

    model = next(m for m in pack_models() if m.name == "dlib-resnet")
    return fetch(model, default_cache_dir() / "downloads")


def record(sdist_path: str) -> None:
    import dlib
    import numpy as np
    from skimage import data

    work = Path(tempfile.mkdtemp())
    with tarfile.open(sdist_path) as archive:
        for member in archive.getmembers():
            name = os.path.basename(member.name)
            if name in ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat"):
                (work / name).write_bytes(archive.extractfile(member).read())
    facerec = dlib.face_recognition_model_v1(str(work / "dlib_face_recognition_resnet_model_v1.dat"))
    predictor = dlib.shape_predictor(str(work / "shape_predictor_5_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()
    out: dict = {}
    random_chip = np.random.default_rng(SEED).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    # Kept in the file: NumPy does not promise its Generator's stream across releases.
    out["random_chip"] = random_chip
    out["random_chip_descriptor"] = np.asarray(facerec.compute_face_descriptor(random_chip), np.float32)
    # (picture, HOG upsampling): the cameraman's face is small; dlib's detector finds it
    # (score ~0.1) only when the picture is upsampled 3 times.
    pictures = {"astronaut": (data.astronaut(), 1), "camera": (np.stack([data.camera()] * 3, axis=-1), 3)}
    for name, (image, upsample) in pictures.items():
        image = np.ascontiguousarray(image)
        dets = list(detector(image, upsample))
        if not dets:
            raise SystemExit(f"{name}: dlib found no face")
        # The HOG detector also fires on small patches: the subject's face is the largest box.
        det = max(dets, key=lambda d: d.width() * d.height())
        out[f"{name}_dlib_detections"] = np.int32(len(dets))
        shape = predictor(image, det)
        chip = np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25), np.uint8)
        details = dlib.get_face_chip_details(shape, size=150, padding=0.25)
        rect = details.rect
        # Chip geometry: the image rectangle (left, top, right, bottom) whose rotation by
        # ``angle`` (radians) about its centre is sampled into the rows x cols chip.
        out[f"{name}_chip_rect"] = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float64)
        out[f"{name}_chip_angle"] = np.float64(details.angle)
        out[f"{name}_box"] = np.array([det.left(), det.top(), det.right(), det.bottom()], np.float32)
        out[f"{name}_shape5"] = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        out[f"{name}_chip"] = chip
        out[f"{name}_chip_descriptor"] = np.asarray(facerec.compute_face_descriptor(chip), np.float32)
        out[f"{name}_pipeline_descriptor"] = np.asarray(facerec.compute_face_descriptor(image, shape, 0, 0.25), np.float32)
    import skimage

    meta = {
        "command": COMMAND,
        "dlib": dlib.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "random_chip_seed": SEED,
        "random_chip": "np.random.default_rng(seed).integers(0, 256, (150, 150, 3), dtype=np.uint8)",
        "random_chip_sha256": hashlib.sha256(random_chip.tobytes()).hexdigest(),
        "pipeline": "get_frontal_face_detector (largest box), shape_predictor_5_face_landmarks, compute_face_descriptor(img, shape, num_jitters=0, padding=0.25)",
        "upsample": {name: upsample for name, (_, upsample) in pictures.items()},
        "pictures": "skimage.data.astronaut(); skimage.data.camera() stacked to RGB",
        "shape5_order": "(x, y) pixels: image-right eye outer corner, its inner corner, image-left eye outer corner, its inner corner, nose base",
    }
    np.savez_compressed(OUT, meta=json.dumps(meta), **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        record(sys.argv[2])
    else:
        path = sdist()
        subprocess.run([str(ensure_venv()), __file__, "--inside", str(path)], check=True)
