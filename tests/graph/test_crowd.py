"""A crowd of 100 real faces through every route that takes a picture, and batch sizes changed at run
time through a Serve config's ``user_config`` without a redeploy (deployed as ``serve deploy`` does)."""

import time

import cv2
import httpx
import numpy as np
import pytest

from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import free_port, start_ray, stop_ray
from tests.fixture_models import fixture_path

TIMEOUT = 180
# MTCNN finds every face of a 10 x 10 tiling of one face; the batch sizes are far below 100.
ARGS = {
    "name": "facegraph",
    "detector": {"model": {"family": "mtcnn", "pack": "mtcnn"}, "deployment": {"num_cpus": 1, "batching": {"max_batch_size": 2, "batch_wait_timeout_s": 0.0}}},
    "recognizer": {"model": {"family": "dlib-resnet", "pack": "dlib-resnet"}, "deployment": {"num_cpus": 1, "max_ongoing_requests": 32, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.0}}},
    "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier")}, "deployment": {"num_cpus": 0.5, "max_ongoing_requests": 32, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.0}}},
    "gallery": {"deployment": {"num_cpus": 0, "max_ongoing_requests": 32, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.0}}},
    "ingress": {"max_batch_images": 2},
}


def crowd(rows: int = 10, cols: int = 10, size: int = 96) -> bytes:
    from skimage import data

    face = cv2.resize(data.astronaut()[20:220, 130:320], (size, size))
    return encode_jpeg(np.ascontiguousarray(np.tile(face, (rows, cols, 1))), 92)


CROWD = crowd()


def deploy(args: dict, overrides: list[dict] | None = None) -> None:
    """Deploy as ``serve deploy`` does: a Serve config, ``user_config`` overrides outside ``args``."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    app = {"name": "facegraph", "route_prefix": "/", "import_path": "facegraph.graph.app:build_app", "args": args}
    if overrides:
        app["deployments"] = overrides
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate({"applications": [app]}), _blocking=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from ray import serve

    start_ray(num_cpus=4, temp_dir=str(tmp_path_factory.mktemp("ray")))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    deploy(ARGS)
    yield f"http://127.0.0.1:{port}"
    stop_ray()


def post(base, path, data=CROWD, ctype="image/jpeg", **params):
    return httpx.post(f"{base}{path}", content=data, headers={"content-type": ctype}, params=params, timeout=TIMEOUT)


def models(base) -> dict:
    return httpx.get(f"{base}/v1/models", timeout=TIMEOUT).json()


def test_a_crowd_of_100_faces_through_every_route_that_takes_a_picture(base):
    for path in ("/v1/analyze", "/v1/detect", "/v1/embed", "/v1/deepfake"):
        r = post(base, path, embeddings="true", identify="true" if path == "/v1/analyze" else "false")
        assert r.status_code == 200, (path, r.text[:300])
        assert len(r.json()["faces"]) == 100 and "degraded" not in r.json(), path
    r = httpx.post(f"{base}/v1/analyze/batch", files=[("images", ("a.jpg", CROWD, "image/jpeg"))] * 2, timeout=TIMEOUT)
    assert r.status_code == 200 and [len(x["faces"]) for x in r.json()["results"]] == [100, 100]
    subject = httpx.post(f"{base}/v1/subjects", json={"name": "crowd"}, timeout=TIMEOUT).json()["id"]
    r = post(base, f"/v1/subjects/{subject}/faces", face_index=99)
    assert r.status_code == 201, r.text[:300]
    r = post(base, "/v1/identify")
    assert r.status_code == 200, r.text[:300]
    # One face enrolled, the same face 100 times: every face matches it.
    assert len(r.json()["faces"]) == 100 and all(f["identity"]["subject_id"] == subject for f in r.json()["faces"])
    r = post(base, "/v1/verify", subject_id=subject, face_a=5)
    assert r.status_code == 200 and r.json()["same"] is True, r.text[:300]
    parts = b"".join(
        f'--b\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode() + CROWD + b"\r\n"
        for name in ("image_a", "image_b")
    )
    r = post(base, "/v1/verify", parts + b"--b--\r\n", "multipart/form-data; boundary=b", face_a=0, face_b=99)
    assert r.status_code == 200 and r.json()["same"] is True, r.text[:300]
    batching = models(base)["recognizer"]["batching"]
    assert max(int(k) for k in batching["batch_size_counts"]) <= 16, batching


def test_batch_sizes_follow_user_config_without_a_redeploy(base):
    before = models(base)
    pids = {stage: {r["replica_pid"] for r in before[stage]["per_replica"]} for stage in ("detector", "recognizer", "deepfake")}
    small = {"max_batch_size": 3, "batch_wait_timeout_s": 0.0}
    deploy(ARGS, [{"name": name, "user_config": small} for name in ("Recognizer", "DeepfakeClassifier", "Gallery")])
    deadline = time.monotonic() + 60
    while models(base)["recognizer"]["batching"]["max_batch_size"] != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = models(base)
    for stage in ("recognizer", "deepfake"):
        assert after[stage]["batching"]["max_batch_size"] == 3, stage
    assert {s: {r["replica_pid"] for r in after[s]["per_replica"]} for s in pids} == pids, "a replica was restarted"
    counts_before = dict(after["recognizer"]["batching"]["batch_size_counts"])
    r = post(base, "/v1/analyze", crowd(2, 5), identify="true")
    assert r.status_code == 200 and "degraded" not in r.json(), r.text[:300]
    assert len(r.json()["faces"]) == 10
    assert post(base, "/v1/identify", crowd(2, 5)).status_code == 200
    counts = models(base)["recognizer"]["batching"]["batch_size_counts"]
    new = {int(k) for k, v in counts.items() if v > counts_before.get(k, 0)}
    assert new and max(new) <= 3, counts  # ten faces cut by the replica into pieces of its new size
