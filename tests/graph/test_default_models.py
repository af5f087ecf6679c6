"""The default config on the built pack: real faces and real embeddings over HTTP."""

import httpx
import numpy as np

from facegraph.models.geometry import iou
from facegraph.models.imaging import encode_jpeg

CONFIG = {"name": "facegraph"}  # every default: CenterFace + dlib ResNet from the pack, no deepfake stage


def test_astronaut(serve_app):
    from skimage import data

    base, _ = serve_app
    jpeg = encode_jpeg(data.astronaut(), 95)
    r = httpx.post(f"{base}/v1/analyze", params={"embeddings": "true"}, content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    (face,) = body["faces"]
    # MTCNN's box for her; CenterFace's takes in a little more of the head.
    assert iou([face["bbox"]], [[182, 64, 265, 171]])[0, 0] >= 0.6
    detector = body["models"]["detector"]
    assert detector["landmarks"] == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    point = dict(zip(detector["landmarks"], face["landmarks"]))
    assert point["left_eye"][0] < point["nose"][0] < point["right_eye"][0]
    assert max(point["left_eye"][1], point["right_eye"][1]) < point["nose"][1] < min(point["mouth_left"][1], point["mouth_right"][1])
    x1, y1, x2, y2 = face["bbox"]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    embedding = np.asarray(face["embedding"])
    assert embedding.shape == (128,) and 0.2 < np.linalg.norm(embedding) < 3
    assert face["deepfake"] is None and body["models"]["deepfake"] is None
    assert detector["family"] == "centerface" and body["models"]["recognizer"]["family"] == "dlib-resnet"
    models = httpx.get(f"{base}/v1/models", timeout=60).json()
    assert models["deepfake"] == {"configured": False}
    settings = models["detector"]["settings"]
    assert set(models["detector"]["files"]) == {"model"} and (settings["input_size"], settings["tile_above"]) == (480, 2560)
    # Warmed at batch 1 and at the largest batch before taking traffic.
    detectors = models["detector"]["per_replica"]
    assert len(detectors) == models["detector"]["answered"] == 2  # both replicas report, not one at random
    assert all(r["warmup_ms"] > 0 for r in detectors) and models["recognizer"]["per_replica"][0]["warmup_error"] is None


def test_a_720p_frame_of_three_heads_over_http(serve_app):
    """The astronaut's face pasted 58, 83 and 133 px wide in a 1280 x 720 frame: the default config finds all three."""
    from facegraph.benchmarks.photos import match
    from facegraph.benchmarks.pictures import composite_720p

    base, _ = serve_app
    frame = composite_720p()
    r = httpx.post(f"{base}/v1/detect", content=frame.jpeg, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert match(frame.boxes, [f["bbox"] for f in faces], threshold=0.3) == (3, 0), faces
