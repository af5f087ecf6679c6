"""Step 19's acceptance through the service: the six people of the group photos enrolled over HTTP
from ``group-t1.jpg``, then a clip panning across the other photo sent to ``POST /v1/analyze/video``:
every track is the right person or unknown, never the wrong one, at most one track switch per person."""

from __future__ import annotations

from collections import defaultdict

import httpx
import numpy as np
import pytest

from facegraph.benchmarks.photos import PHOTO_FACES, load_photos
from facegraph.models.geometry import iou
from tests import video_clips
from tests.video_clips import Clip, person_name

# The default detector and recognizer from the pack, and a gallery of this module's own.
CONFIG = lambda tmp: {"name": "facegraph", "gallery": {"database": str(tmp.mktemp("gallery") / "gallery.sqlite3")}}  # noqa: E731
# A detected face is a truth face above this IoU (the detector frames faces a little differently).
TRUTH_IOU = 0.4

pytestmark = pytest.mark.skipif(
    not video_clips.six_people_available(), reason="the group photos are not here (../shared/photos: group-t1.jpg, multiface.jpg)"
)


def _enroll_the_six(base: str) -> None:
    photo = next(p for p in load_photos()[0] if p.name == "group-t1.jpg")
    found = httpx.post(f"{base}/v1/detect", content=photo.data, headers={"content-type": "image/jpeg"}, timeout=60).json()["faces"]
    overlaps = iou(np.asarray(PHOTO_FACES["group-t1.jpg"][1], np.float32), np.asarray([f["bbox"] for f in found], np.float32))
    for i, row in enumerate(overlaps):
        assert row.max() >= TRUTH_IOU, f"group-t1 face {i} not found"
        subject = httpx.post(f"{base}/v1/subjects", json={"name": person_name(i)}, timeout=60).json()
        enrolled = httpx.post(
            f"{base}/v1/subjects/{subject['id']}/faces", params={"face_index": int(row.argmax())}, content=photo.data,
            headers={"content-type": "image/jpeg"}, timeout=60,
        )  # fmt: skip
        assert enrolled.status_code == 201, enrolled.text


def _truth(track: dict, clip: Clip) -> set[str]:
    """The people the clip put where the track's faces are."""
    people = set()
    for face in track["faces"]:
        shown = clip.at(face["time_s"])
        if shown:
            overlaps = iou(np.asarray([a.box for a in shown], np.float32), np.asarray([face["bbox"]], np.float32))[:, 0]
            if overlaps.max() >= TRUTH_IOU:
                people.add(shown[int(overlaps.argmax())].person)
    return people


def test_the_six_people_are_named_rightly_or_not_at_all(serve_app):
    base, _ = serve_app
    _enroll_the_six(base)
    clip = video_clips.six_people_pan("h264", fps=5)
    answer = httpx.post(
        f"{base}/v1/analyze/video", params={"identify": "true"}, content=clip.data, headers={"content-type": "video/mp4"}, timeout=300
    )
    assert answer.status_code == 200, answer.text[:500]
    body = answer.json()
    assert body["identification"]["threshold"] > 0 and body["models"]["recognizer"]["family"] == "dlib-resnet"
    tracks_of: dict[str, list[int]] = defaultdict(list)
    named = set()
    for track in body["tracks"]:
        truth = _truth(track, clip)
        assert len(truth) <= 1, f"track {track['track_id']} mixes {sorted(truth)}"
        if truth:
            tracks_of[next(iter(truth))].append(track["track_id"])
        if track["identity"] is not None:
            assert truth == {track["identity"]["name"]}, f"track {track['track_id']} of {truth} named {track['identity']['name']}"
            named.add(track["identity"]["name"])
    assert set(tracks_of) == clip.people
    assert max(len(ids) for ids in tracks_of.values()) <= 2, dict(tracks_of)  # at most one switch per person
    # Not vacuous. The service's gallery tightens the recognizer's threshold for a false-match rate of
    # 1 % (gallery.false_match_rate): 3 of the 6 were named on 2026-12-06, where the recognizer's own
    # threshold names 5 (tests/parity/test_video_tracks.py).
    assert len(named) >= 3, (named, body["identification"], [(t["track_id"], t["votes"], t["probes"]) for t in body["tracks"]])
