"""The default config on the built pack: real faces and real embeddings over HTTP."""

import httpx
import numpy as np

from models.geometry import iou
from models.imaging import encode_jpeg

CONFIG = {"name": "facegraph"}  # every default: MTCNN + dlib ResNet from the pack, no deepfake stage


def test_astronaut(serve_app):
    from skimage import data

    base, _ = serve_app
    jpeg = encode_jpeg(data.astronaut(), 95)
    r = httpx.post(f"{base}/v1/analyze", params={"embeddings": "true"}, content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    (face,) = body["faces"]
    assert iou([face["bbox"]], [[182, 64, 265, 171]])[0, 0] >= 0.8
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face["landmarks"]
    assert lx < nx < rx and max(ly, ry) < ny < min(mly, mry) and mlx < nx < mrx
    x1, y1, x2, y2 = face["bbox"]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    embedding = np.asarray(face["embedding"])
    assert embedding.shape == (128,) and 0.2 < np.linalg.norm(embedding) < 3
    assert face["deepfake"] is None and body["models"]["deepfake"] is None
    assert body["models"]["detector"]["family"] == "mtcnn" and body["models"]["recognizer"]["family"] == "dlib-resnet"
    models = httpx.get(f"{base}/v1/models", timeout=60).json()
    assert models["deepfake"] == {"configured": False}
    assert set(models["detector"]["files"]) == {"pnet", "rnet", "onet"}
    # Warmed at batch 1 and at the largest batch before taking traffic.
    assert models["detector"]["warmup_ms"] > 0 and models["recognizer"]["warmup_error"] is None
