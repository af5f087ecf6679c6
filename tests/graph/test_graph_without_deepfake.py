"""A config without the deepfake stage: answers say ``deepfake: null`` and /v1/models says so."""

import httpx

from models.fixtures import draw_squares
from models.imaging import encode_jpeg
from tests.graph.conftest import FIXTURE_CONFIG

CONFIG = {k: v for k, v in FIXTURE_CONFIG.items() if k != "deepfake"}
JPEG = encode_jpeg(draw_squares(800, 600, [(100, 100, 180, 180)]), 95)


def test_deepfake_not_configured(serve_app):
    base, _ = serve_app
    r = httpx.post(f"{base}/v1/analyze", content=JPEG, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200
    (face,) = r.json()["faces"]
    assert face["deepfake"] is None
    assert r.json()["models"]["deepfake"] is None
    assert httpx.get(f"{base}/v1/models").json()["deepfake"] == {"configured": False}
    r = httpx.post(f"{base}/v1/deepfake", content=JPEG, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_configured"
