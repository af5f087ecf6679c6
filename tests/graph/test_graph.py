"""The whole graph on fixture models with known answers: real Serve, real HTTP, real handles."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.fixture_models import SQUARE_LANDMARKS, draw_squares, fixture_path, pooled_arcface_reference, rgb_classifier_reference
from facegraph.models.geometry import ARCFACE_TEMPLATE_112, crop_face
from facegraph.models.imaging import decode_image, encode_jpeg
from facegraph.models.types import CropSpec, Face
from tests.graph.conftest import FIXTURE_CONFIG

CONFIG = {**FIXTURE_CONFIG, "ingress": {"max_body_bytes": 2_000_000, "max_batch_images": 4}}
SQUARE = (500, 300, 620, 420)
JPEG = encode_jpeg(draw_squares(1280, 720, [SQUARE]), 95)
THREE = encode_jpeg(draw_squares(1280, 720, [(100, 100, 200, 200), (600, 300, 680, 380), (1000, 500, 1100, 620)]), 95)
BLANK = encode_jpeg(draw_squares(640, 480, []), 95)


def post(base, path, data=JPEG, ctype="image/jpeg", **params):
    return httpx.post(f"{base}{path}", content=data, headers={"content-type": ctype}, params=params, timeout=60)


def expected_branch_outputs(jpeg: bytes, face: dict):
    image = decode_image(jpeg)
    f = Face(tuple(face["bbox"]), face["score"], np.asarray(face["landmarks"], np.float32))
    emb = pooled_arcface_reference(crop_face(image, f, CropSpec("landmarks", (112, 112), ARCFACE_TEMPLATE_112))[None])[0]
    fake = rgb_classifier_reference(crop_face(image, f, CropSpec("box", (64, 64), margin=0.2))[None])[0]
    return emb, fake


def test_analyze_whole_answer(serve_app):
    base, _ = serve_app
    r = post(base, "/v1/analyze", embeddings="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (1280, 720)
    (face,) = body["faces"]
    assert np.abs(np.asarray(face["bbox"]) - SQUARE).max() <= 2
    x1, y1, x2, y2 = SQUARE
    landmarks = np.stack([x1 + SQUARE_LANDMARKS[:, 0] * (x2 - x1), y1 + SQUARE_LANDMARKS[:, 1] * (y2 - y1)], axis=1)
    assert np.abs(np.asarray(face["landmarks"]) - landmarks).max() <= 2
    emb, fake = expected_branch_outputs(JPEG, face)
    assert len(face["embedding"]) == 32
    assert float(np.dot(face["embedding"], emb)) > 0.999
    assert abs(face["deepfake"]["fake_probability"] - fake) < 1e-3
    assert face["deepfake"]["label"] in ("real", "fake")
    models = body["models"]
    assert models["detector"]["family"] == "yolov8-face" and models["detector"]["source"] == fixture_path("square-yolov8-face")
    assert models["recognizer"]["provider"] == "CPUExecutionProvider"
    assert {"decode", "detect", "recognizer", "deepfake", "total"} <= set(body["timings_ms"])
    assert "degraded" not in body


def test_switches_and_limits(serve_app):
    base, _ = serve_app
    face = post(base, "/v1/analyze", recognize="false", deepfake="false").json()["faces"][0]
    assert "embedding" not in face and face["deepfake"] is None
    body = post(base, "/v1/analyze", THREE, max_faces=2).json()
    assert len(body["faces"]) == 2
    assert body["faces"][0]["score"] >= body["faces"][1]["score"]
    assert post(base, "/v1/analyze", THREE, min_score=0.99).json()["faces"] == []
    assert post(base, "/v1/analyze", BLANK).json()["faces"] == []


def test_multipart_and_single_stage_routes(serve_app):
    base, _ = serve_app
    r = httpx.post(f"{base}/v1/analyze", files={"image": ("a.jpg", JPEG, "image/jpeg")}, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    detect = post(base, "/v1/detect").json()["faces"][0]
    assert "embedding" not in detect and detect["deepfake"] is None
    assert len(post(base, "/v1/embed").json()["faces"][0]["embedding"]) == 32
    df = post(base, "/v1/deepfake").json()["faces"][0]
    assert "embedding" not in df and 0 <= df["deepfake"]["fake_probability"] <= 1


def test_batch_endpoint_in_order_with_per_image_errors(serve_app):
    base, _ = serve_app
    files = [("images", ("a.jpg", JPEG, "image/jpeg")), ("images", ("b.bin", b"not an image", "application/octet-stream")), ("images", ("c.jpg", THREE, "image/jpeg"))]
    r = httpx.post(f"{base}/v1/analyze/batch", files=files, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results[0]["faces"]) == 1
    assert results[1]["error"]["code"] == "invalid_image"
    assert len(results[2]["faces"]) == 3
    small = encode_jpeg(draw_squares(64, 64, []), 80)
    too_many = [("images", (f"{i}.jpg", small, "image/jpeg")) for i in range(5)]
    r = httpx.post(f"{base}/v1/analyze/batch", files=too_many, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_images"


@pytest.mark.parametrize(
    "data,ctype,params,status,code",
    [
        (b"", "image/jpeg", {}, 400, "empty_image"),
        (b"\x00" * 1000, "image/png", {}, 400, "invalid_image"),
        (JPEG, "text/plain", {}, 415, "unsupported_media_type"),
        (JPEG, "image/jpeg", {"max_faces": "0"}, 422, "invalid_query"),
        (JPEG, "image/jpeg", {"min_score": "abc"}, 422, "invalid_query"),
        (b"x" * 2_100_000, "image/jpeg", {}, 413, "body_too_large"),
        (b"--xx\r\nbroken", "multipart/form-data; boundary=xx", {}, 400, "invalid_multipart"),
    ],
    ids=["empty", "zeros", "text", "max_faces0", "min_score_abc", "too_big", "bad_multipart"],
)
def test_client_mistakes_are_json_4xx_and_service_keeps_serving(serve_app, data, ctype, params, status, code):
    base, _ = serve_app
    r = post(base, "/v1/analyze", data, ctype, **params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert "x" * 50 not in r.text
    assert post(base, "/v1/analyze").status_code == 200


def test_handle_api_with_bytes_and_arrays(serve_app):
    _, handle = serve_app
    from_bytes = handle.analyze.remote(JPEG, embeddings=True).result()
    array = decode_image(JPEG)
    from_array = handle.analyze.remote(array, embeddings=True, deepfake=False).result()
    assert from_bytes["faces"][0]["bbox"] == from_array["faces"][0]["bbox"]
    assert np.allclose(from_bytes["faces"][0]["embedding"], from_array["faces"][0]["embedding"], atol=1e-6)
    assert from_array["faces"][0]["deepfake"] is None
    from facegraph.graph.errors import ApiError

    with pytest.raises(ApiError) as err:
        handle.analyze.remote(b"nope").result()
    assert (err.value.code, err.value.status) == ("invalid_image", 400)


def test_health_ready_models_openapi(serve_app):
    base, _ = serve_app
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["models_loaded"] is True
    assert health["gpu_available"] is False and health["gpus"] == []
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 200 and set(ready.json()["deployments"].values()) == {"HEALTHY"}
    models = httpx.get(f"{base}/v1/models").json()
    for stage, fraction in (("detector", 0.25), ("recognizer", 0.25), ("deepfake", 0.5)):
        info = models[stage]
        assert info["configured"] is True and info["gpu_fraction"] == fraction
        assert info["provider"] == "CPUExecutionProvider" and info["replicas"] == {"RUNNING": 1} and info["answered"] == 1
        assert [r["gpu_fraction"] for r in info["per_replica"]] == [fraction]
        assert info["batching"]["max_batch_size"] == CONFIG[stage]["deployment"]["batching"]["max_batch_size"]
    spec = httpx.get(f"{base}/openapi.json").json()
    assert {"/v1/analyze", "/v1/analyze/batch", "/v1/detect", "/v1/embed", "/v1/deepfake", "/v1/models", "/health", "/ready"} <= set(spec["paths"])
    assert "image/jpeg" in spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{base}/docs").status_code == 200


def test_concurrent_requests_are_batched(serve_app):
    base, _ = serve_app
    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda _: post(base, "/v1/analyze", THREE).status_code, range(48)))
    assert codes == [200] * 48
    models = httpx.get(f"{base}/v1/models").json()
    for stage in ("detector", "recognizer", "deepfake"):
        sizes = [int(k) for k in models[stage]["batching"]["batch_size_counts"]]
        assert max(sizes) > 1, (stage, models[stage]["batching"])
