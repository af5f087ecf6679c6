"""Clips made in code, through the default config's real models in process: tracks and identities against the clips' truth.

The acceptance of Step 19, without Ray: the six people of the group photos are enrolled from
``group-t1.jpg``; in a clip panning across the other photo (``multiface.jpg``), every track is
the right person or unknown, never the wrong one, with at most one track switch per person.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np
import pytest

from facegraph.benchmarks.photos import PHOTO_FACES, load_photos
from facegraph.graph.core.wire import SearchRequest
from facegraph.graph.config import FacegraphConfig, GalleryConfig
from facegraph.graph.identity.index import GalleryIndex, search_batch
from facegraph.graph.identity.store import GalleryStore
from facegraph.models.geometry import crop_face, iou
from facegraph.models.registry import load_model
from facegraph.models.tracking import Track, track_identity
from facegraph.models.video import probe, sample
from facegraph.models.video_analysis import VideoModels, analyze_frames
from tests.pack import pack_dir
from tests import video_clips
from tests.video_clips import Clip, person_name

# A detected face is a truth face above this IoU (the detector's boxes frame faces a little differently).
TRUTH_IOU = 0.4


@lru_cache(maxsize=None)
def default_models() -> VideoModels:
    """The default config's detector and recognizer, as a replica builds them, on the CPU."""
    config = FacegraphConfig()
    load = lambda stage: load_model(stage.model.model_copy(update={"device": "cpu"}), cpu_threads=2, cache_dir=pack_dir()).adapter  # noqa: E731
    return VideoModels(load(config.detector), load(config.recognizer))


def run(clip: Clip) -> list[Track]:
    info = probe(clip.data)
    _, tracks = analyze_frames(sample(clip.data, info), default_models(), max_pixels=40_000_000)
    return tracks


def truth_people(track: Track, clip: Clip) -> list[str | None]:
    """Per face of the track, the person the clip put there (None: no truth face there, e.g. cut by the frame's edge)."""
    people = []
    for face in track.faces:
        shown = clip.at(face.timestamp_s)
        if not shown:
            people.append(None)
            continue
        overlaps = iou(np.asarray([a.box for a in shown], np.float32), np.asarray([face.face.bbox], np.float32))[:, 0]
        people.append(shown[int(overlaps.argmax())].person if overlaps.max() >= TRUTH_IOU else None)
    return people


def check_tracks_against_truth(tracks: list[Track], clip: Clip) -> dict[str, list[int]]:
    """Every track follows one person only; the tracks of each person (by track id)."""
    by_person: dict[str, list[int]] = defaultdict(list)
    for track in tracks:
        people = {p for p in truth_people(track, clip) if p is not None}
        assert len(people) <= 1, f"{clip.name}: track {track.track_id} mixes {sorted(people)}"
        if people:
            by_person[people.pop()].append(track.track_id)
    return dict(by_person)


needs_photos = pytest.mark.skipif(
    not video_clips.six_people_available(), reason="the group photos are not here (../shared/photos: group-t1.jpg, multiface.jpg)"
)


@lru_cache(maxsize=None)
def enrolled_gallery(folder: str) -> GalleryIndex:
    """The six people of ``group-t1.jpg`` enrolled, each under the name of its face's index there."""
    models = default_models()
    photo = next(p for p in load_photos()[0] if p.name == "group-t1.jpg")
    image = photo.rgb()
    faces = models.detector.detect([image])[0]
    marked = np.asarray(PHOTO_FACES["group-t1.jpg"][1], np.float32)
    store = GalleryStore(f"{folder}/gallery.sqlite3")
    recognizer = models.recognizer

    overlaps = iou(marked, np.asarray([f.bbox for f in faces], np.float32))
    for i in range(len(marked)):
        j = int(overlaps[i].argmax())
        assert overlaps[i, j] >= TRUTH_IOU, f"group-t1 face {i} not found"
        vector = recognizer.embed([crop_face(image, faces[j], recognizer.crop_spec)])[0]
        subject = store.create_subject(person_name(i), {})
        store.add_face(subject["id"], vector, "video-test")
    index = GalleryIndex(store, "video-test", recognizer.metric)
    index.refresh()
    return index


def identify(track: Track, index: GalleryIndex) -> str | None:
    """The identify route's rule for a track: each best embedding searched with the gallery's decision, then the vote."""
    recognizer = default_models().recognizer
    floor = GalleryConfig().min_eye_distance_px
    request = SearchRequest(track.best_embeddings, "video-test", recognizer.metric, 1, recognizer.match_threshold, None, recognizer.impostors)
    (answer,) = search_batch(lambda space, metric: index, [request])
    best = [row[0] if row else None for row in answer.faces]
    low = track.low_quality(lambda face: face.eye_distance is not None and face.eye_distance < floor)
    found = track_identity(best, low)
    return None if found.match is None else found.match.name


@needs_photos
@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_the_six_people_are_identified_rightly_or_not_at_all(codec, tmp_path_factory):
    clip = video_clips.six_people_pan(codec, fps=5)
    tracks = run(clip)
    by_person = check_tracks_against_truth(tracks, clip)
    assert set(by_person) == clip.people == {person_name(i) for i in range(6)}
    switches = {p: len(ids) - 1 for p, ids in by_person.items()}
    assert max(switches.values()) <= 1, switches
    index = enrolled_gallery(str(tmp_path_factory.mktemp("gallery")))
    named = {}
    for track in tracks:
        truth = {p for p in truth_people(track, clip) if p is not None}
        name = identify(track, index)
        named[track.track_id] = name
        if name is not None:
            assert truth == {name}, f"track {track.track_id} of {truth} identified as {name}"
    # Not vacuous: most of the people are named.
    assert len({n for n in named.values() if n is not None}) >= 5, named


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_two_people_crossing_keep_their_own_tracks(codec):
    clip = video_clips.crossing(codec)
    tracks = run(clip)
    assert {p: len(ids) for p, ids in check_tracks_against_truth(tracks, clip).items()} == {"astronaut": 1, "camera": 1}


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_a_cut_between_scenes_starts_a_new_track(codec):
    clip = video_clips.scene_cut(codec)
    tracks = run(clip)
    by_person = check_tracks_against_truth(tracks, clip)
    assert {p: len(ids) for p, ids in by_person.items()} == {"astronaut": 1, "camera": 1}
    first, second = (next(t for t in tracks if t.track_id == by_person[p][0]) for p in ("astronaut", "camera"))
    assert first.end_s < 3.0 <= second.start_s


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_a_face_entering_and_leaving_is_one_track_spanning_its_visit(codec):
    clip = video_clips.entering_and_leaving(codec)
    tracks = run(clip)
    by_person = check_tracks_against_truth(tracks, clip)
    assert list(by_person) == ["astronaut"] and len(by_person["astronaut"]) == 1
    (track,) = [t for t in tracks if t.track_id == by_person["astronaut"][0]]
    seen = [a.time_s for a in clip.truth]
    # The track spans the whole visit, give or take a sample (2 fps) on each side.
    assert track.start_s <= min(seen) + 0.5 and track.end_s >= max(seen) - 0.5
    assert track.best.quality > 0 and track.best_embeddings.shape == (3, 128) and track.mean_embedding.shape == (128,)
