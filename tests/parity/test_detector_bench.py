"""``facegraph bench-detectors``: what it measures per candidate, and how it picks."""

from __future__ import annotations

from benchmarks.detectors import CANDIDATES, Candidate, choose, evaluate, table
from benchmarks.photos import Labelled, match, skimage_pictures
from benchmarks.pictures import picture_mix
from tests.pack import pack_dir


def test_a_candidate_is_scored_on_marked_and_composed_pictures():
    labelled = [p for p in skimage_pictures() if p.name in ("skimage:astronaut", "skimage:coffee")]
    composed = picture_mix(2)
    row = evaluate(Candidate("blazeface, score 0.4, whole picture", "blazeface", {"score_threshold": 0.4, "tile_above": None}), labelled, composed, pack_dir(), threads=(1,))
    assert (row["marked"], row["found"], row["lost"], row["false"]) == (1, 1, 0, 0)
    assert row["composed_pasted"] == sum(len(p.boxes) for p in composed)
    assert row["ms_small_1t"] > 0 and row["pictures_small"] == 4 and row["ms_large_1t"] is None
    assert row["reach"] is None  # no group photo among the pictures


def test_the_cheapest_candidate_that_keeps_every_face_and_adds_no_false_one_is_chosen():
    rows = [
        {"name": "reference", "lost": 0, "false": 2, "ms_small_1t": 90.0, "ms_large_1t": 400.0},
        {"name": "fast but loses a face", "lost": 1, "false": 0, "ms_small_1t": 5.0, "ms_large_1t": 9.0},
        {"name": "fast, more false", "lost": 0, "false": 3, "ms_small_1t": 5.0, "ms_large_1t": 9.0},
        {"name": "keeps all", "lost": 0, "false": 0, "ms_small_1t": 7.0, "ms_large_1t": 70.0},
    ]
    assert choose(rows, reference="reference") == "keeps all"
    assert table({"candidates": [{**rows[3], "marked": 2, "found": 2, "composed_found": 1, "composed_pasted": 3, "reach": None}]})[0][:4] == ["keeps all", "2/2", 0, "1/3"]


def test_every_candidate_spells_out_the_settings_that_matter():
    for candidate in CANDIDATES:
        keys = {"max_side"} if candidate.family == "mtcnn" else {"score_threshold", "tile_above"}
        assert keys <= set(candidate.settings), candidate.name


def test_match_pairs_each_face_once():
    faces = [(0, 0, 10, 10), (100, 100, 110, 110)]
    assert match(faces, [(0, 0, 10, 10), (1, 0, 11, 10), (300, 300, 310, 310)]) == (1, 2)
    assert match(faces, []) == (0, 0) and match([], [(0, 0, 1, 1)]) == (0, 1)
    assert Labelled("x", ()).faces == ()
