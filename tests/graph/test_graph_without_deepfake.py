"""A config without the deepfake stage and with API keys."""

import httpx

from tests.fixture_models import draw_squares
from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import FIXTURE_CONFIG

CONFIG = {**{k: v for k, v in FIXTURE_CONFIG.items() if k != "deepfake"}, "ingress": {"api_keys": ["secret-key-1", "secret-key-2"]}}
AUTH = {"x-api-key": "secret-key-1"}
JPEG = encode_jpeg(draw_squares(800, 600, [(100, 100, 180, 180)]), 95)


def test_deepfake_not_configured(serve_app):
    base, _ = serve_app
    r = httpx.post(f"{base}/v1/analyze", content=JPEG, headers={"content-type": "image/jpeg", **AUTH}, timeout=60)
    assert r.status_code == 200
    (face,) = r.json()["faces"]
    assert face["deepfake"] is None
    assert r.json()["models"]["deepfake"] is None
    assert httpx.get(f"{base}/v1/models", headers=AUTH).json()["deepfake"] == {"configured": False}
    r = httpx.post(f"{base}/v1/deepfake", content=JPEG, headers={"content-type": "image/jpeg", **AUTH}, timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_configured"


def test_api_keys_guard_everything_but_health(serve_app):
    base, _ = serve_app
    headers = {"content-type": "image/jpeg"}
    r = httpx.post(f"{base}/v1/analyze", content=JPEG, headers=headers, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert "secret-key-1" not in r.text
    wrong = httpx.post(f"{base}/v1/analyze", content=JPEG, headers={**headers, "x-api-key": "nope"}, timeout=60)
    assert wrong.status_code == 401
    assert httpx.get(f"{base}/v1/models", timeout=60).status_code == 401
    ok = httpx.post(f"{base}/v1/analyze", content=JPEG, headers={**headers, "x-api-key": "secret-key-1"}, timeout=60)
    assert ok.status_code == 200
    bearer = httpx.post(f"{base}/v1/analyze", content=JPEG, headers={**headers, "authorization": "Bearer secret-key-2"}, timeout=60)
    assert bearer.status_code == 200
    assert httpx.get(f"{base}/health", timeout=60).status_code == 200
    assert httpx.get(f"{base}/ready", timeout=60).status_code == 200


def test_batching_comes_from_the_config(serve_app):
    """A new app version with other batching (tests/graph/test_crowd.py changes it in place, no restart)."""
    import copy

    from ray import serve

    from facegraph.graph.app import build_app

    base, _ = serve_app
    before = httpx.get(f"{base}/v1/models", headers=AUTH, timeout=60).json()["detector"]
    config = copy.deepcopy(CONFIG)
    config["detector"]["deployment"]["batching"] = {"max_batch_size": 3, "batch_wait_timeout_s": 0.02}
    serve.run(build_app(config), name="facegraph", route_prefix="/")
    after = httpx.get(f"{base}/v1/models", headers=AUTH, timeout=60).json()["detector"]
    assert before["batching"]["max_batch_size"] == 8
    assert after["batching"]["max_batch_size"] == 3 and after["batching"]["batch_wait_timeout_s"] == 0.02
