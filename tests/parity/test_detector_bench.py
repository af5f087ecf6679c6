"""``facegraph bench-detectors``: what it measures per candidate, and how it picks."""

from __future__ import annotations

import pytest

from facegraph.benchmarks.detectors import CANDIDATES, CURVE, Candidate, choose, evaluate, identification, table
from facegraph.benchmarks.photos import Labelled, load_photos, match, skimage_pictures
from facegraph.benchmarks.pictures import astronaut_crowd, composite_720p, picture_mix
from facegraph.models.registry import ModelSpec, load_model
from tests.pack import pack_dir


def test_a_candidate_is_scored_on_marked_and_composed_pictures():
    labelled = [p for p in skimage_pictures() if p.name in ("skimage:astronaut", "skimage:coffee")]
    composed = picture_mix(2)
    candidate = Candidate("centerface, 640, whole picture", "centerface", {"input_size": 640, "score_threshold": 0.5, "tile_above": None})
    row = evaluate(candidate, labelled, composed, pack_dir(), threads=(1,), composite=composite_720p(), crowd=astronaut_crowd(2, 2))
    assert (row["marked"], row["found"], row["lost"], row["false"], row["faceless_false"]) == (1, 1, 0, 0, 0)
    assert row["composed_pasted"] == sum(len(p.boxes) for p in composed)
    assert row["composite"]["pasted"] == 3 and row["composite"]["found"] == 3 and row["crowd"]["found"] == 4
    assert row["ms_small_1t"] > 0 and row["pictures_small"] == 4 and row["ms_large_1t"] is None
    assert row["reach"] is None and row["identification"] is None  # no group photo among the pictures


def _row(name, lost=0, faceless=0, composed=48, composite=3, crowd=100, small=10.0, large=50.0):
    return {
        "name": name, "lost": lost, "faceless_false": faceless, "composed_found": composed, "composed_pasted": 48,
        "composite": {"found": composite, "pasted": 3}, "crowd": {"found": crowd, "pasted": 100},
        "ms_small_1t": small, "ms_large_1t": large,
    }  # fmt: skip


def test_the_cheapest_candidate_that_finds_every_face_and_meets_the_floors_is_chosen():
    rows = [
        _row("slow", small=90.0, large=400.0),
        _row("loses a marked face", lost=1, small=5.0),
        _row("a false face on a faceless picture", faceless=1, small=5.0),
        _row("three composed faces lost", composed=45, small=5.0),
        _row("a head of the frame lost", composite=2, small=5.0),
        _row("three of the crowd lost", crowd=97, small=5.0),
        _row("at the floors", composed=46, crowd=98, small=7.0),
    ]
    assert choose(rows) == "at the floors"
    assert choose(rows[:1]) == "slow" and choose(rows[1:6]) is None
    cells = table({"candidates": [{**rows[6], "marked": 2, "found": 2, "false": 1, "composite": {"found": 3, "pasted": 3, "other": 0, "ms": 9.0}, "crowd": {"found": 98, "pasted": 100, "other": 1, "ms": 90.0}}]})[0]
    assert cells[:8] == ["at the floors", "2/2", 0, 1, "46/48", "3/3", "98/100 (+1)", 90.0]


def test_every_candidate_spells_out_the_settings_that_matter():
    for candidate in CANDIDATES + CURVE:
        keys = {"mtcnn": {"max_side"}, "blazeface": {"score_threshold", "tile_above"}}.get(
            candidate.family, {"input_size", "score_threshold", "tile_above", "tiles", "tile_fraction", "interpolation", "edges"}
        )
        assert keys <= set(candidate.settings), candidate.name


@pytest.mark.skipif(not load_photos()[0], reason="the group photos are not here (../shared/photos)")
def test_identification_pairs_the_same_people_across_the_group_photos():
    """With MTCNN's points, each person of group-t1 is nearest to themself in multiface (the pairing in benchmarks.photos)."""
    photos = load_photos()[0]
    if {"group-t1.jpg", "multiface.jpg"} - {p.name for p in photos}:
        pytest.skip("a group photo is missing")
    cache = pack_dir()
    detector = load_model(ModelSpec(family="mtcnn", pack="mtcnn", device="cpu", settings={"max_side": None}), cache_dir=cache).adapter
    recognizer = load_model(ModelSpec(family="dlib-resnet", pack="dlib-resnet", device="cpu"), cache_dir=cache).adapter
    result = identification(detector, recognizer, photos)
    assert result["nearest_is_right"] == 6 and result["genuine_max"] < result["impostor_min"]
    assert len(result["genuine"]) == 6 and None not in result["genuine"]


def test_match_pairs_each_face_once():
    faces = [(0, 0, 10, 10), (100, 100, 110, 110)]
    assert match(faces, [(0, 0, 10, 10), (1, 0, 11, 10), (300, 300, 310, 310)]) == (1, 2)
    assert match(faces, []) == (0, 0) and match([], [(0, 0, 1, 1)]) == (0, 1)
    assert Labelled("x", ()).faces == ()


def test_the_candidates_named_as_defaults_are_the_families_defaults():
    from facegraph.models.registry import family_class

    named = [c for c in CANDIDATES if "(its default)" in c.name]
    assert {c.family for c in named} == {"mtcnn", "blazeface", "centerface"}
    for candidate in named:
        defaults = family_class(candidate.family).Settings().model_dump()
        assert {k: defaults[k] for k in candidate.settings} == candidate.settings, candidate.name
