"""facegraph.models.tracking: linking faces into tracks, best faces, deepfake summaries and track identities (no models, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from facegraph.models.embedding import Match
from facegraph.models.geometry import ARCFACE_TEMPLATE_112
from facegraph.models.tracking import FrameFaces, TrackingSettings, face_quality, frontalness, track_faces, track_identity
from facegraph.models.types import Face

TEMPLATE = np.asarray(ARCFACE_TEMPLATE_112, np.float32)


def face_at(x: float, y: float, size: float = 100.0, score: float = 0.9, nose_dx: float = 0.0) -> Face:
    """A face whose box's top-left is (x, y), its five points the ArcFace template scaled into it."""
    points = TEMPLATE * (size / 112.0) + np.float32([x, y])
    points[2, 0] += nose_dx * size / 112.0
    return Face((x, y, x + size, y + size), score, points)


def person(seed: int, dim: int = 8) -> np.ndarray:
    """A person's embedding: unit vectors of different people are about 1.4 apart, far over 0.6."""
    v = np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def jitter(v: np.ndarray, seed: int, amount: float = 0.05) -> np.ndarray:
    return (v + np.random.default_rng(seed).normal(scale=amount / np.sqrt(len(v)), size=len(v))).astype(np.float32)


def frame(index: int, faces: list[Face], people: list[int] | None = None, fake: list[float] | None = None, fps: float = 2.0) -> FrameFaces:
    embeddings = None
    if people is not None:
        embeddings = np.asarray([jitter(person(p), index * 10 + k) for k, p in enumerate(people)], np.float32).reshape(len(faces), 8)
    return FrameFaces(index, index / fps, tuple(faces), embeddings, None if fake is None else tuple(fake))


def members(tracks) -> list[list[tuple[int, int]]]:
    """Per track, its (frame, rounded x) pairs: who went where."""
    return [[(f.frame, round(f.face.bbox[0])) for f in t.faces] for t in tracks]


def test_frontalness_is_one_for_the_template_and_falls_as_the_nose_turns_away():
    assert frontalness(face_at(0, 0)) == pytest.approx(1.0, abs=0.02)
    eye_distance = TEMPLATE[1, 0] - TEMPLATE[0, 0]
    half_turned = frontalness(face_at(0, 0, nose_dx=eye_distance / 2))  # the nose in front of an eye
    assert half_turned == pytest.approx(0.5, abs=0.03)
    assert frontalness(face_at(0, 0, nose_dx=eye_distance * 1.2)) == 0.0  # a profile
    # Roll does not count: the same face turned 30 degrees in the picture is as frontal.
    theta = np.deg2rad(30)
    rot = np.float32([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rolled = Face((0, 0, 112, 112), 0.9, (TEMPLATE - 56) @ rot.T + 56)
    assert frontalness(rolled) == pytest.approx(1.0, abs=0.02)
    assert frontalness(Face((0, 0, 10, 10), 0.9, None)) == 1.0  # nothing to judge
    # Looking down: the nose nearer the mouth line than a frontal face's.
    down = face_at(0, 0)
    points = down.landmarks.copy()
    points[2, 1] = points[3, 1] - 2
    assert frontalness(Face(down.bbox, down.score, points)) < 0.2


def test_quality_is_score_times_size_times_frontalness():
    face = face_at(10, 10, size=64, score=0.5)
    assert face_quality(face) == pytest.approx(0.5 * 64 * frontalness(face))


def test_two_people_crossing_keep_their_tracks_by_embedding():
    frames = []
    for i in range(7):  # A walks right, B walks left; at i = 3 their boxes coincide
        frames.append(frame(i, [face_at(100 + 50 * i, 100), face_at(400 - 50 * i, 100)], [0, 1]))
    tracks = track_faces(frames)
    assert len(tracks) == 2
    assert [round(f.face.bbox[0]) for f in tracks[0].faces] == [100 + 50 * i for i in range(7)]
    assert [round(f.face.bbox[0]) for f in tracks[1].faces] == [400 - 50 * i for i in range(7)]


def test_a_person_who_leaves_and_comes_back_keeps_one_track_and_a_cut_starts_a_new_one():
    frames = [frame(0, [face_at(100, 100)], [0]), frame(1, [face_at(110, 100)], [0])]
    frames += [frame(i, [], []) for i in range(2, 8)]  # gone for 3 s, longer than max_gap_s
    frames += [frame(8, [face_at(500, 300)], [0])]  # back, elsewhere
    frames += [frame(9, [face_at(500, 300)], [1])]  # a cut: someone else in the same place
    tracks = track_faces(frames)
    assert [t.frames for t in tracks] == [(0, 1, 8), (9,)]
    assert tracks[0].start_s == 0.0 and tracks[0].end_s == 4.0


def test_without_embeddings_boxes_link_along_their_motion_and_a_long_gap_starts_a_new_track():
    frames = [frame(i, [face_at(100 + 60 * i, 100)]) for i in range(4)]  # 60 px per sample, boxes 100 px
    frames += [frame(4, [])]
    frames += [frame(5, [face_at(100 + 60 * 5, 100)])]  # back on its path after one missed sample
    frames += [frame(i, []) for i in range(6, 12)]
    frames += [frame(12, [face_at(100 + 60 * 12, 100)])]  # after 3.5 s: boxes alone never re-identify
    tracks = track_faces(frames, TrackingSettings(max_gap_s=1.5))
    assert [t.frames for t in tracks] == [(0, 1, 2, 3, 5), (12,)]
    assert tracks[0].best_embeddings is None and tracks[0].mean_embedding is None


def test_tracks_do_not_depend_on_the_order_of_faces_in_a_frame():
    base = [frame(i, [face_at(100 + 40 * i, 100), face_at(400, 100 + 30 * i), face_at(700 - 40 * i, 300)], [0, 1, 2]) for i in range(5)]
    swapped = [
        FrameFaces(f.index, f.timestamp_s, f.faces[::-1], f.embeddings[::-1], None) if f.index % 2 else f for f in base
    ]
    one, two = track_faces(base), track_faces(swapped)
    key = lambda tracks: sorted(sorted(m) for m in members(tracks))  # noqa: E731
    assert key(one) == key(two) and len(one) == 3
    assert members(track_faces(base)) == members(one)  # deterministic


def test_a_track_reports_its_best_face_embeddings_and_deepfake_summary():
    sizes = [60, 120, 90, 120]
    faces = [face_at(100, 100, size=s) for s in sizes]
    faces[3] = face_at(100, 100, size=120, nose_dx=20)  # as large as the best, but turned: below the 90 px frontal one
    frames = [frame(i, [f], [0], fake=[p]) for i, (f, p) in enumerate(zip(faces, [0.1, 0.7, 0.8, 0.2]))]
    (track,) = track_faces(frames, TrackingSettings(best_embeddings=2, deepfake_threshold=0.5, fake_share=0.5))
    assert track.best.frame == 1
    np.testing.assert_allclose(track.best_embeddings, np.stack([frames[1].embeddings[0], frames[2].embeddings[0]]))
    np.testing.assert_allclose(track.mean_embedding, np.mean([f.embeddings[0] for f in frames], axis=0), rtol=1e-6)
    summary = track.deepfake
    assert (summary.mean, summary.max, summary.share_over_threshold, summary.label) == (pytest.approx(0.45), 0.8, 0.5, "fake")
    assert track_faces(frames, TrackingSettings(fake_share=0.75))[0].deepfake.label == "real"
    out = track.to_json(embeddings=True)
    assert out["frames"] == [0, 1, 2, 3] and out["best"]["frame"] == 1 and len(out["embedding"]) == 8
    assert out["faces"][2]["fake_probability"] == 0.8 and out["deepfake"]["label"] == "fake"
    assert "embedding" not in track.to_json()


def test_no_classifier_means_no_deepfake_summary_and_mismatched_inputs_are_refused():
    (track,) = track_faces([frame(0, [face_at(0, 0)], [0])])
    assert track.deepfake is None and track.to_json()["deepfake"] is None
    with pytest.raises(ValueError, match="2 embeddings for 1 faces"):
        track_faces([FrameFaces(0, 0.0, (face_at(0, 0),), np.zeros((2, 8), np.float32))])
    with pytest.raises(ValueError, match="deepfake probabilities"):
        track_faces([FrameFaces(0, 0.0, (face_at(0, 0),), None, (0.1, 0.2))])


def test_low_quality_is_every_face_under_the_floor():
    frames = [frame(0, [face_at(0, 0, size=40)], [0]), frame(1, [face_at(0, 0, size=200)], [0])]
    (track,) = track_faces(frames)
    # The 40 px face's eyes are 12.6 px apart, the 200 px face's 63 px: one face clearing the floor is enough.
    assert not track.low_quality(lambda f: f.eye_distance < 30)
    assert track.low_quality(lambda f: f.eye_distance < 100)


def _match(subject: str, distance: float, match: bool = True) -> Match:
    return Match(subject, subject.upper(), distance, 1 - distance / 2, match)


def test_a_track_is_named_only_when_most_of_its_probes_match_one_subject_and_none_another():
    named = track_identity([_match("a", 0.4), _match("a", 0.35), None])
    assert named.match.subject_id == "a" and named.match.distance == 0.35 and (named.votes, named.probes) == (2, 3)
    assert track_identity([_match("a", 0.4), None, None]).match is None  # one of three is no majority
    assert track_identity([_match("a", 0.4), _match("a", 0.4), _match("b", 0.5)]).match is None  # split: unknown
    assert track_identity([_match("a", 0.4), _match("a", 0.7, match=False)]).match is None  # one of two
    assert track_identity([_match("a", 0.3)] * 3, low_quality=True).to_json() == {"identity": None, "votes": 3, "probes": 3, "low_quality": True}
    assert track_identity([]).match is None
