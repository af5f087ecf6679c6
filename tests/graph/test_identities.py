"""Identities on the default models: enroll, identify, verify, erase, restart — real pictures, real Serve."""

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from facegraph.graph.identity.store import GalleryStore
from facegraph.models.imaging import encode_jpeg
from tests.mtcnn_pack import astronaut_variants

DATABASE = Path(tempfile.mkdtemp(prefix="facegraph-gallery-")) / "gallery.sqlite3"
# Two gallery replicas over one file: every read must see every write, whichever replica answers.
CONFIG = {"name": "facegraph", "gallery": {"database": str(DATABASE), "deployment": {"num_replicas": 2, "num_cpus": 0.1}}}
JPEG = {"content-type": "image/jpeg"}


def _jpeg(image) -> bytes:
    return encode_jpeg(image, 95)


@pytest.fixture(scope="module")
def pictures():
    from skimage import data

    variants = {name: _jpeg(image) for name, (image, _) in astronaut_variants().items()}
    return {
        **variants,
        "cameraman": _jpeg(np.repeat(data.camera()[:, :, None], 3, axis=2)),
        "mirrored": _jpeg(np.ascontiguousarray(data.astronaut()[:, ::-1])),  # enrolled by no other test
    }


@pytest.fixture(scope="module")
def astronaut_subject(serve_app, pictures):
    base, _ = serve_app
    r = httpx.post(f"{base}/v1/subjects", json={"name": "Eileen Collins", "metadata": {"role": "astronaut"}}, timeout=60)
    assert r.status_code == 201, r.text
    subject = r.json()
    r = httpx.post(f"{base}/v1/subjects/{subject['id']}/faces", content=pictures["original"], headers=JPEG, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["embedding_space"].startswith("dlib-resnet:")
    return subject["id"]


def test_identifies_the_astronaut_in_every_copy(serve_app, pictures, astronaut_subject):
    base, _ = serve_app
    for name in ("shifted", "scaled_0.7", "scaled_1.4", "rotated_+8", "rotated_-8", "jpeg_40"):
        r = httpx.post(f"{base}/v1/identify", content=pictures[name], headers=JPEG, timeout=60)
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        (face,) = body["faces"]
        assert body["metric"] == "euclidean" and body["threshold"] == body["decision"]["threshold"] <= 0.6
        # A gallery of a few subjects decides from the recognizer's measured impostor distances.
        assert body["decision"]["rule"] == "recognizer" and body["decision"]["false_match_rate"] == 0.01
        assert face["low_quality"] is False
        assert face["identity"]["subject_id"] == astronaut_subject, (name, face["matches"])
        assert face["identity"]["distance"] < 0.45, (name, face["identity"])


def test_the_cameraman_is_no_match(serve_app, pictures, astronaut_subject):
    base, _ = serve_app
    body = httpx.post(f"{base}/v1/identify", content=pictures["cameraman"], headers=JPEG, timeout=60).json()
    (face,) = body["faces"]
    assert face["identity"] is None
    assert face["low_quality"] is True  # his eyes are 12 px apart, under the 20 px floor
    assert face["matches"][0]["subject_id"] == astronaut_subject and not face["matches"][0]["match"]
    assert face["matches"][0]["distance"] >= 0.6


def test_analyze_can_add_identities(serve_app, pictures, astronaut_subject):
    base, _ = serve_app
    body = httpx.post(f"{base}/v1/analyze", params={"identify": "true"}, content=pictures["shifted"], headers=JPEG, timeout=60).json()
    assert body["faces"][0]["identity"]["subject_id"] == astronaut_subject
    assert body["faces"][0]["low_quality"] is False and body["identification"]["rule"] == "recognizer"
    plain = httpx.post(f"{base}/v1/analyze", content=pictures["shifted"], headers=JPEG, timeout=60).json()
    assert "identity" not in plain["faces"][0]


def test_verify_two_pictures_and_against_a_subject(serve_app, pictures, astronaut_subject):
    base, _ = serve_app
    files = {"image_a": ("a.jpg", pictures["original"], "image/jpeg"), "image_b": ("b.jpg", pictures["rotated_+8"], "image/jpeg")}
    same = httpx.post(f"{base}/v1/verify", files=files, timeout=60).json()
    assert same["same"] is True and same["distance"] < 0.6
    files["image_b"] = ("b.jpg", pictures["cameraman"], "image/jpeg")
    other = httpx.post(f"{base}/v1/verify", files=files, timeout=60).json()
    assert other["same"] is False and other["distance"] >= 0.6
    r = httpx.post(f"{base}/v1/verify", params={"subject_id": astronaut_subject}, content=pictures["jpeg_40"], headers=JPEG, timeout=60)
    assert r.status_code == 200 and r.json()["same"] is True and r.json()["b"]["name"] == "Eileen Collins"


def test_handle_api(serve_app, pictures, astronaut_subject):
    _, handle = serve_app
    found = handle.identify.remote(pictures["scaled_1.4"]).result(timeout_s=60)
    assert found["faces"][0]["identity"]["subject_id"] == astronaut_subject
    verdict = handle.verify.remote(pictures["cameraman"], subject_id=astronaut_subject).result(timeout_s=60)
    assert verdict["same"] is False
    listed = handle.list_subjects.remote().result(timeout_s=60)
    assert astronaut_subject in [s["id"] for s in listed["subjects"]]


def test_refusals(serve_app, pictures, astronaut_subject):
    from skimage import data

    base, _ = serve_app
    blank = _jpeg(np.full((200, 300, 3), 128, np.uint8))
    r = httpx.post(f"{base}/v1/subjects/{astronaut_subject}/faces", content=blank, headers=JPEG, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    two = _jpeg(np.concatenate([data.astronaut(), data.astronaut()], axis=1))
    r = httpx.post(f"{base}/v1/subjects/{astronaut_subject}/faces", content=two, headers=JPEG, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "several_faces"
    r = httpx.post(f"{base}/v1/subjects/{astronaut_subject}/faces", params={"face_index": 5}, content=two, headers=JPEG, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "face_not_found"
    r = httpx.post(f"{base}/v1/subjects/nobody/faces", content=pictures["original"], headers=JPEG, timeout=60)
    assert r.status_code == 404
    r = httpx.post(f"{base}/v1/subjects/{astronaut_subject}/faces", content=pictures["cameraman"], headers=JPEG, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "low_quality" and "20 px" in r.json()["error"]["message"]
    assert httpx.delete(f"{base}/v1/subjects/nobody", timeout=60).status_code == 404
    r = httpx.post(f"{base}/v1/subjects", json={"name": "x", "metadata": {"blob": "y" * 20000}}, timeout=60)
    assert r.status_code == 413
    assert httpx.post(f"{base}/v1/subjects", json={"name": ""}, timeout=60).status_code == 422
    r = httpx.post(f"{base}/v1/verify", content=pictures["original"], headers=JPEG, timeout=60)
    assert r.status_code == 422


def test_a_face_from_another_recognizer_is_refused_not_compared(serve_app, pictures):
    base, _ = serve_app
    subject = httpx.post(f"{base}/v1/subjects", json={"name": "old model"}, timeout=60).json()["id"]
    store = GalleryStore(DATABASE)  # a face enrolled by an earlier recognizer, straight into the file
    store.add_face(subject, np.zeros(512, np.float32), "arcface:00000000deadbeef:fp32")
    store.close()
    r = httpx.post(f"{base}/v1/verify", params={"subject_id": subject}, content=pictures["original"], headers=JPEG, timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "embedding_space_mismatch"
    stats = httpx.get(f"{base}/v1/gallery", timeout=60).json()
    assert stats["faces_other_spaces"] >= 1
    body = httpx.post(f"{base}/v1/identify", content=pictures["original"], headers=JPEG, timeout=60).json()
    assert all(m["subject_id"] != subject for m in body["faces"][0]["matches"])
    assert httpx.delete(f"{base}/v1/subjects/{subject}", timeout=60).status_code == 200


def test_concurrent_enrolls_lose_nothing(serve_app, pictures):
    base, _ = serve_app
    subject = httpx.post(f"{base}/v1/subjects", json={"name": "many"}, timeout=60).json()["id"]
    names = ["original", "shifted", "scaled_0.7", "scaled_1.4", "rotated_+8", "rotated_-8", "jpeg_40"] * 2

    def enroll(name):
        return httpx.post(f"{base}/v1/subjects/{subject}/faces", content=pictures[name], headers=JPEG, timeout=120)

    with ThreadPoolExecutor(len(names)) as pool:
        replies = list(pool.map(enroll, names))
    assert [r.status_code for r in replies] == [201] * len(names)
    assert len({r.json()["face_id"] for r in replies}) == len(names)
    assert httpx.get(f"{base}/v1/subjects/{subject}", timeout=60).json()["faces"] == len(names)
    assert httpx.delete(f"{base}/v1/subjects/{subject}", timeout=60).json()["faces_erased"] == len(names)


def test_deleted_subject_is_gone_from_the_file(serve_app, pictures):
    base, _ = serve_app
    subject = httpx.post(f"{base}/v1/subjects", json={"name": "to forget"}, timeout=60).json()["id"]
    assert httpx.post(f"{base}/v1/subjects/{subject}/faces", content=pictures["mirrored"], headers=JPEG, timeout=60).status_code == 201
    store = GalleryStore(DATABASE)
    embedding = store.subject_faces(subject, store.get_subject(subject)["faces_by_space"].popitem()[0])[0]
    store.close()
    files = lambda: b"".join(p.read_bytes() for p in DATABASE.parent.iterdir())  # noqa: E731
    assert embedding.tobytes() in files()
    r = httpx.delete(f"{base}/v1/subjects/{subject}", timeout=60)
    assert r.status_code == 200 and r.json()["faces_erased"] == 1
    assert embedding.tobytes() not in files() and subject.encode() not in files()
    assert httpx.get(f"{base}/v1/subjects/{subject}", timeout=60).status_code == 404


def test_gallery_survives_a_restart(serve_app, pictures, astronaut_subject):
    from ray import serve

    from facegraph.graph.app import build_app

    base, _ = serve_app
    serve.delete("facegraph")
    handle = serve.run(build_app(CONFIG), name="facegraph", route_prefix="/")
    assert handle.get_subject.remote(astronaut_subject).result(timeout_s=60)["faces"] == 1
    body = httpx.post(f"{base}/v1/identify", content=pictures["rotated_-8"], headers=JPEG, timeout=60).json()
    assert body["faces"][0]["identity"]["subject_id"] == astronaut_subject
