"""A user's YuNet file, named in a Serve config YAML, serves the faces cv2.FaceDetectorYN finds."""

from __future__ import annotations

import io

import cv2
import httpx
import numpy as np
import yaml
from PIL import Image

from facegraph.graph.config import load_serve_config
from tests.faithful.home import reference_pictures
from tests.faithful.yunet import yunet
from tests.fixture_models import fixture_path


def CONFIG(tmp_path_factory) -> dict:
    """The facegraph app's args as a cluster/*.yaml file gives them: detector ``family: yunet, path: ...``."""
    folder = tmp_path_factory.mktemp("yunet")
    model = folder / "face_detection_yunet_2023mar.onnx"
    model.write_bytes(yunet())
    args = {
        "detector": {"model": {"family": "yunet", "path": str(model)}, "deployment": {"num_cpus": 0.5}},
        "recognizer": {"model": {"family": "arcface", "path": fixture_path("pooled-arcface")}, "deployment": {"num_cpus": 0.5}},
        "deepfake": None,
        "gallery": None,
    }
    serve_config = {"applications": [{"name": "facegraph", "route_prefix": "/", "import_path": "facegraph.graph.app:build_app", "args": args}]}
    path = folder / "yunet.yaml"
    path.write_text(yaml.safe_dump(serve_config))
    config, _ = load_serve_config(path)
    return {"name": "facegraph", **config.model_dump(exclude_unset=True)}


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_served_yunet_answers_like_face_detector_yn(serve_app):
    base, _ = serve_app
    models = httpx.get(f"{base}/v1/models", timeout=60).json()
    assert models["detector"]["family"] == "yunet"
    path = models["detector"]["files"]["model"]
    for name, bgr in reference_pictures().items():
        if min(bgr.shape[:2]) <= 112:
            continue
        r = httpx.post(f"{base}/v1/analyze?embeddings=true", content=_png(np.ascontiguousarray(bgr[..., ::-1])), headers={"content-type": "image/png"}, timeout=120)
        assert r.status_code == 200, r.text
        faces = r.json()["faces"]
        detector = cv2.FaceDetectorYN.create(path, "", (bgr.shape[1], bgr.shape[0]), 0.6, 0.3, 5000)
        _, want = detector.detect(bgr)
        want = np.zeros((0, 15), np.float32) if want is None else want
        assert len(faces) == len(want) > 0, name
        ours = np.array([[f["bbox"][0], f["bbox"][1], f["bbox"][2] - f["bbox"][0], f["bbox"][3] - f["bbox"][1], *np.ravel(f["landmarks"]), f["score"]] for f in faces])
        for row in want:
            j = int(np.argmin(np.abs(ours[:, :4] - row[:4]).max(axis=1)))
            assert np.abs(ours[j, :14] - row[:14]).max() <= 1.0 and abs(ours[j, 14] - row[14]) <= 1e-4, (name, row, ours[j])
        assert all(isinstance(f["embedding"], list) for f in faces)  # aligned on YuNet's five points
