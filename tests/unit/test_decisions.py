"""Identification decisions that follow the gallery's size, and approximate search that follows the store (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from facegraph.graph.core.wire import SearchRequest
from facegraph.graph.config import FaissConfig
from facegraph.graph.identity.index import MIN_IMPOSTOR_SUBJECTS, GalleryIndex, search_batch
from facegraph.models.dlib_resnet import IMPOSTORS
from facegraph.models.embedding import ImpostorModel, identification_decision, impostor_distance_at
from facegraph.models.types import Face

SPACE = "dlib-resnet:0123456789abcdef:fp32"


def _enroll(store, subjects: int, faces: int, seed: int = 0, noise: float = 0.3) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(subjects, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = store.create_subjects([f"s{i}" for i in range(subjects)])
    rows = []
    for _ in range(faces):
        x = centres + rng.normal(scale=noise / np.sqrt(128), size=centres.shape)
        rows += list(zip(ids, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)))
    store.add_faces(rows, SPACE)
    return ids, centres


def test_the_threshold_tightens_as_the_gallery_grows():
    model = ImpostorModel(mean=0.8, std=0.08, pairs=500, source="gallery")
    found = [identification_decision("euclidean", 0.6, 0.01, n, model).threshold for n in (1, 10, 1000, 10**6)]
    assert found == sorted(found, reverse=True) and found[-1] < 0.45
    # Each comparison may match an impostor with probability 1 - (1 - 0.01) ** (1 / N).
    n = 1000
    expected = impostor_distance_at(model, 1 - 0.99 ** (1 / n))
    assert identification_decision("euclidean", 0.6, 0.01, n, model).threshold == pytest.approx(expected)
    # Never looser than the 1:1 threshold; cosine thresholds are similarities and move up.
    one = identification_decision("euclidean", 0.6, 0.5, 1, model)
    assert one.threshold == 0.6 and "capped" in one.reason
    cos = identification_decision("cosine", 0.4, 0.01, 1000, ImpostorModel(0.6, 0.05, 500, "gallery"))
    assert cos.threshold > 0.4 and cos.rule == "false-match-rate"


def test_rules_and_reasons():
    assert identification_decision("euclidean", 0.6, None, 100, IMPOSTORS).rule == "fixed"
    unknown = identification_decision("cosine", 0.4, 0.01, 100, None)
    assert unknown.rule == "fixed" and unknown.threshold == 0.4 and "no impostor" in unknown.reason
    fallback = identification_decision("euclidean", 0.6, 0.01, 100, IMPOSTORS)
    assert fallback.rule == "recognizer" and fallback.threshold < 0.6 and "too few subjects" in fallback.reason
    answer = fallback.to_json()
    assert set(answer) == {"threshold", "rule", "reason", "false_match_rate", "gallery_faces", "impostor_pairs"}


def test_empirical_tail_where_the_sample_holds_it():
    sample = tuple(float(v) for v in np.sort(np.random.default_rng(0).normal(0.8, 0.1, 10_000)))
    model = ImpostorModel(float(np.mean(sample)), float(np.std(sample)), len(sample), "gallery", sample)
    assert impostor_distance_at(model, 0.01) == pytest.approx(np.quantile(sample, 0.01))
    # Past the sample's tail the normal fit extrapolates.
    assert impostor_distance_at(model, 1e-9) < min(sample)


def test_a_gallery_measures_its_own_impostors_from_enough_subjects(store):
    _enroll(store, MIN_IMPOSTOR_SUBJECTS - 1, 2)
    index = GalleryIndex(store, SPACE, "euclidean")
    index.refresh()
    assert index.impostors() is None
    _enroll(store, 5, 2, seed=1)
    index.refresh()
    model = index.impostors()
    assert model is not None and model.source == "gallery" and model.pairs > 10_000
    assert 1.2 < model.mean < 1.6  # random unit directions in 128-d sit about sqrt(2) apart
    # A search answer carries the decision the gallery made from them.
    q = np.zeros((1, 128), np.float32)
    q[0, 0] = 1
    (answer,) = search_batch(lambda s, m: index, [SearchRequest(q, SPACE, "euclidean", 3, 0.6, 0.01, IMPOSTORS)])
    assert answer.decision.rule == "false-match-rate" and answer.decision.gallery_faces == len(index)
    (fallback,) = search_batch(lambda s, m: GalleryIndex(store, "empty:space", "euclidean"), [SearchRequest(q, "empty:space", "euclidean", 3, 0.6, 0.01, IMPOSTORS)])
    assert fallback.faces == [[]] and fallback.decision.rule == "recognizer"


def test_approximate_search_agrees_with_exact_and_follows_enrolls_and_erasures(store):
    ids, centres = _enroll(store, 600, 4)
    exact = GalleryIndex(store, SPACE, "euclidean")
    approx = GalleryIndex(store, SPACE, "euclidean", FaissConfig(above_faces=1000, nlist=32, nprobe=8))
    small = GalleryIndex(store, SPACE, "euclidean", FaissConfig(above_faces=10_000))
    for index in (exact, approx, small):
        index.refresh()
        index.wait_approximate()
    assert approx.approximate_active and not small.approximate_active and not exact.approximate_active
    probes = (centres[:100] + np.random.default_rng(9).normal(scale=0.3 / np.sqrt(128), size=(100, 128))).astype(np.float32)
    a, b = exact.search(probes, 3, 0.6), approx.search(probes, 3, 0.6)
    assert [r[0].subject_id for r in a] == [r[0].subject_id for r in b] == ids[:100]
    assert all(abs(x[0].distance - y[0].distance) < 1e-5 for x, y in zip(a, b))
    # An enroll is searchable at once; an erasure is gone at once (rows re-added without retraining).
    (new,) = store.create_subjects(["late"])
    store.add_face(new, probes[0] * 1.0, SPACE)
    approx.refresh()
    assert approx.approximate_active and approx.search(probes[:1], 1, 0.6)[0][0].subject_id == new
    store.delete_subject(new)
    store.delete_subject(ids[1])
    approx.refresh()  # searches are exact (and right) while the rows are re-added in the background
    assert approx.search(probes[:2], 3, 0.6)[1][0].subject_id not in (new, ids[1])
    assert approx.wait_approximate(60) and approx.trainings == 1 and len(approx._ann) == len(approx) == 600 * 4 - 4
    assert approx.search(probes[:2], 3, 0.6)[1][0].subject_id not in (new, ids[1])
    assert approx.search(probes[:1], 1, 0.6)[0][0].subject_id == ids[0]


def test_many_faces_of_few_subjects_still_give_k_subjects(store):
    ids, centres = _enroll(store, 40, 60)  # 2400 faces, 60 per subject: the first candidates are one subject's
    approx = GalleryIndex(store, SPACE, "euclidean", FaissConfig(above_faces=1000, nlist=16, nprobe=16))
    approx.refresh()
    assert approx.wait_approximate(60)
    (row,) = approx.search(centres[:1].astype(np.float32), 5, 0.6)
    assert len({m.subject_id for m in row}) == 5 and row[0].subject_id == ids[0]


def test_eye_distance():
    eyes = np.array([[10, 10], [40, 50], [25, 30], [15, 60], [35, 60]], np.float32)
    assert Face((0, 0, 50, 70), 0.9, eyes).eye_distance == pytest.approx(50.0)
    assert Face((0, 0, 50, 70), 0.9, None).eye_distance is None
    assert Face((0, 0, 50, 70), 0.9, eyes[2:4], points=("nose", "mouth_center")).eye_distance is None
