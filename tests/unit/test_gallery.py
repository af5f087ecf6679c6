"""The gallery store and its exact index, without Ray: correctness, freshness, erasure, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from facegraph.graph.identity.index import GalleryIndex
from facegraph.graph.identity.store import GalleryError, GalleryStore
from facegraph.models.embedding import compare, is_match

SPACE = "dlib-resnet:0123456789abcdef:fp32"


def _brute_force(queries, matrix, owners, metric, k):
    """Reference: per query, each subject's closest face, the k closest subjects."""
    out = []
    for q in queries:
        if metric == "euclidean":
            d = np.linalg.norm(matrix - q, axis=1)
        else:
            d = 1 - (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        best: dict[str, float] = {}
        for owner, dist in zip(owners, d):
            best[owner] = min(best.get(owner, np.inf), float(dist))
        out.append(sorted(best.items(), key=lambda kv: kv[1])[:k])
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_search_equals_brute_force(store, metric):
    rng = np.random.default_rng(1)
    subjects = store.create_subjects([f"s{i}" for i in range(60)])
    owners = [subjects[i % 60] for i in range(300)]  # five faces per subject
    matrix = rng.normal(size=(300, 128)).astype(np.float32)
    store.add_faces(list(zip(owners, matrix)), SPACE)
    index = GalleryIndex(store, SPACE, metric)
    index.refresh()
    queries = matrix[:7] + rng.normal(scale=0.1, size=(7, 128)).astype(np.float32)
    found = index.search(queries, k=5, threshold=0.5)
    for got, want in zip(found, _brute_force(queries, matrix, owners, metric, 5)):
        assert [m.subject_id for m in got] == [s for s, _ in want]
        np.testing.assert_allclose([m.distance for m in got], [d for _, d in want], rtol=1e-4, atol=1e-4)
        assert len({m.subject_id for m in got}) == 5  # one entry per subject
        assert got[0].name == f"s{subjects.index(got[0].subject_id)}"


def test_a_subject_with_many_close_faces_does_not_crowd_out_others(store):
    rng = np.random.default_rng(2)
    crowd, other = store.create_subjects(["crowd", "other"])
    base = rng.normal(size=128).astype(np.float32)
    store.add_faces([(crowd, base + rng.normal(scale=0.01, size=128).astype(np.float32)) for _ in range(500)], SPACE)
    store.add_faces([(other, base + 0.5)], SPACE)
    index = GalleryIndex(store, SPACE, "euclidean")
    index.refresh()
    (matches,) = index.search(base[None], k=2, threshold=0.6)
    assert [m.name for m in matches] == ["crowd", "other"]
    assert matches[0].match and not matches[1].match


def test_match_decisions_and_compare():
    a = np.array([1.0, 0.0], np.float32)
    b = np.array([0.0, 1.0], np.float32)
    distance, similarity = compare(a, b, "euclidean")
    assert distance == pytest.approx(np.sqrt(2)) and similarity == pytest.approx(0.0)
    assert is_match(0.59, "euclidean", 0.6) and not is_match(0.61, "euclidean", 0.6)
    distance, similarity = compare(a, a * 3, "cosine")
    assert distance == pytest.approx(0.0, abs=1e-9) and is_match(distance, "cosine", 0.3)


def test_subjects_crud_and_refusals(store):
    created = store.create_subject("Ada", {"team": "x"})
    assert created["faces"] == 0 and created["metadata"] == {"team": "x"}
    listed = store.list_subjects()
    assert listed["total"] == 1 and listed["subjects"][0]["id"] == created["id"]
    with pytest.raises(GalleryError) as err:
        store.get_subject("nope")
    assert err.value.code == "not_found"
    with pytest.raises(GalleryError):
        store.add_face("nope", np.ones(128, np.float32), SPACE)
    store.add_face(created["id"], np.ones(128, np.float32), SPACE)
    store.add_face(created["id"], np.ones(128, np.float32), "arcface:ffff:fp32")
    assert store.get_subject(created["id"])["faces_by_space"] == {SPACE: 1, "arcface:ffff:fp32": 1}
    assert store.delete_subject(created["id"]) == 2
    with pytest.raises(GalleryError):
        store.delete_subject(created["id"])


def test_only_one_embedding_space_is_searched(store):
    (subject,) = store.create_subjects(["a"])
    store.add_faces([(subject, np.ones(128, np.float32))], "other-model:1:fp32")
    index = GalleryIndex(store, SPACE, "euclidean")
    index.refresh()
    assert len(index) == 0 and index.search(np.ones((1, 128), np.float32), 3, 0.6) == [[]]
    assert store.space_counts() == {"other-model:1:fp32": 1}


def test_another_reader_sees_every_committed_write(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    writer, reader = GalleryStore(path), GalleryStore(path)
    index = GalleryIndex(reader, SPACE, "euclidean")
    index.refresh()
    (subject,) = writer.create_subjects(["late"])
    vector = np.full(128, 0.1, np.float32)
    writer.add_face(subject, vector, SPACE)
    index.refresh()
    (matches,) = index.search(vector[None], 1, 0.6)
    assert matches[0].subject_id == subject and matches[0].distance == pytest.approx(0, abs=1e-3)
    writer.delete_subject(subject)
    index.refresh()
    assert index.search(vector[None], 1, 0.6) == [[]]
    writer.close()
    reader.close()


def test_data_survives_reopening(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    first = GalleryStore(path)
    subject = first.create_subject("kept", {})["id"]
    first.add_face(subject, np.arange(128, dtype=np.float32), SPACE)
    first.close()
    again = GalleryStore(path)
    assert again.get_subject(subject)["faces"] == 1
    np.testing.assert_array_equal(again.subject_faces(subject, SPACE)[0], np.arange(128, dtype=np.float32))
    again.close()


def test_erased_embeddings_leave_no_bytes_on_disk(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    store = GalleryStore(path)
    keep, gone = store.create_subjects(["keep", "gone"])
    rng = np.random.default_rng(3)
    secret = rng.normal(size=128).astype(np.float32)
    store.add_face(keep, rng.normal(size=128).astype(np.float32), SPACE)
    store.add_face(gone, secret, SPACE)
    on_disk = lambda: b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gallery.sqlite3"))  # noqa: E731
    assert secret.tobytes() in on_disk()
    store.delete_subject(gone)
    assert secret.tobytes() not in on_disk()
    assert secret[:8].tobytes() not in on_disk()
    assert b"gone" not in on_disk()
    store.close()


def test_concurrent_enrolls_lose_nothing(tmp_path):
    path = tmp_path / "gallery.sqlite3"
    stores = [GalleryStore(path) for _ in range(3)]  # three replicas' connections
    subject = stores[0].create_subject("crowd", {})["id"]
    errors: list[BaseException] = []

    def enroll(store: GalleryStore, worker: int) -> None:
        try:
            for i in range(20):
                store.add_face(subject, np.full(128, worker * 100 + i, np.float32), SPACE)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=enroll, args=(stores[w % 3], w)) for w in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    faces = stores[1].subject_faces(subject, SPACE)
    assert len(faces) == 180 and len({float(f[0]) for f in faces}) == 180
    for s in stores:
        s.close()
