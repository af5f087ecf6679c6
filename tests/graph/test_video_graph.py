"""POST /v1/analyze/video and the handle's analyze_video on the fixture cluster: a track per moving
square, a progress line per batch of frames, and every hostile clip a 4xx JSON answer."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import av
import httpx
import numpy as np
import pytest

from facegraph.benchmarks.video_decode import encode
from tests.fixture_models import draw_squares
from tests.unit.test_video import audio_only, colour_frames
from tests.video_clips import declared_size_bomb

FPS, SECONDS, SIZE = 10, 4.0, (640, 360)
SQUARE = 60


def _squares_at(t: float) -> list[tuple[int, int, int, int]]:
    """Two squares: one drifting right along the top, one drifting left along the bottom."""
    left = int(40 + 100 * t)
    right = int(540 - 100 * t)
    return [(left, 40, left + SQUARE, 40 + SQUARE), (right, 240, right + SQUARE, 240 + SQUARE)]


@pytest.fixture(scope="module")
def squares() -> bytes:
    frames = (draw_squares(*SIZE, _squares_at(k / FPS), seed=0) for k in range(int(FPS * SECONDS)))
    return encode(frames, "h264", fps=FPS)


def _post(base: str, data: bytes, ctype: str = "video/mp4", params: dict | None = None, accept: str | None = None) -> httpx.Response:
    headers = {"content-type": ctype, **({"accept": accept} if accept else {})}
    return httpx.post(f"{base}/v1/analyze/video", content=data, headers=headers, params=params or {}, timeout=120)


def _check_tracks(answer: dict) -> None:
    assert answer["sampling"]["frames"] == int(SECONDS * 2)  # the default 2 frames a second
    tracks = answer["tracks"]
    assert len(tracks) == 2, [(t["track_id"], t["frames"]) for t in tracks]
    for track in tracks:
        assert len(track["frames"]) >= 6 and track["frames"] == sorted(track["frames"])
        # Each track follows one square: its boxes stay on one row of the picture.
        rows = {round(f["bbox"][1] / 100) for f in track["faces"]}
        assert len(rows) == 1, rows
        for face in track["faces"]:
            truth = [b for b in _squares_at(face["time_s"]) if round(b[1] / 100) in rows][0]
            assert abs(face["bbox"][0] - truth[0]) < 12 and abs(face["bbox"][2] - truth[2]) < 12, (face, truth)
        assert track["deepfake"]["faces"] == len(track["faces"]) and track["best"] in track["faces"]
    assert answer["models"]["detector"]["family"] == "yolov8-face" and answer["video"]["codec"] == "h264"


def test_a_clip_gives_a_track_per_moving_square(serve_app, squares):
    base, _ = serve_app
    answer = _post(base, squares, params={"embeddings": "true"})
    assert answer.status_code == 200, answer.text[:500]
    _check_tracks(answer.json())
    assert all(len(t["embedding"]) > 0 for t in answer.json()["tracks"])


def test_multipart_and_the_handle_give_the_same_tracks(serve_app, squares):
    base, handle = serve_app
    multipart = httpx.post(f"{base}/v1/analyze/video", files={"video": ("clip.mp4", squares, "video/mp4")}, timeout=120)
    assert multipart.status_code == 200, multipart.text[:500]
    by_handle = handle.analyze_video.remote(squares).result(timeout_s=120)
    _check_tracks(by_handle)
    assert [t["frames"] for t in by_handle["tracks"]] == [t["frames"] for t in multipart.json()["tracks"]]


def test_ndjson_streams_progress_then_the_answer(serve_app, squares):
    base, _ = serve_app
    answer = _post(base, squares, accept="application/x-ndjson")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in answer.text.splitlines() if line]
    progress = [e["progress"] for e in events[:-1]]
    assert progress and all("progress" in e for e in events[:-1])
    assert [p["frames_done"] for p in progress] == sorted(p["frames_done"] for p in progress)
    assert progress[-1]["frames_done"] == progress[-1]["frames_total"] == int(SECONDS * 2)
    _check_tracks(events[-1]["answer"])


def _too_long() -> bytes:
    """Two frames 700 s apart: a few kilobytes that declare a clip longer than one request takes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(1, 700))
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for k in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((96, 160, 3), 80, np.uint8), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


HOSTILE = [
    ("truncated", lambda clip: _half(encode(colour_frames(100), "vp9", fps=25)), "video/webm", 400, "truncated_video"),
    ("not a video", lambda clip: np.random.default_rng(1).bytes(30_000), "video/mp4", 400, "invalid_video"),
    ("audio only", lambda clip: audio_only("mp4", "aac"), "video/mp4", 415, "no_video_stream"),
    ("zero frames", lambda clip: encode([], "h264", size=(160, 96)), "video/mp4", 400, "empty_video"),
    ("declared 20000x20000", lambda clip: declared_size_bomb(20000, 20000), "video/x-matroska", 413, "frame_too_large"),
    ("over the duration limit", lambda clip: _too_long(), "video/mp4", 413, "video_too_long"),
    ("a text file as video/mp4", lambda clip: b"this is a letter, not a video\n" * 200, "video/mp4", 400, "invalid_video"),
    ("a picture sent as video", lambda clip: b"\xff\xd8\xff\xe0" + b"\0" * 5000, "image/jpeg", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("name, make, ctype, status, code", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_clips_get_4xx_json_and_the_service_stays_ready(serve_app, squares, name, make, ctype, status, code):
    base, _ = serve_app
    answer = _post(base, make(squares), ctype=ctype)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text[:300]
    if code == "video_too_long":
        assert "facegraph batch" in answer.json()["error"]["message"]
    streamed = _post(base, make(squares), ctype=ctype, accept="application/x-ndjson")
    if streamed.status_code == 200:  # refused while it decoded, after the stream began: the last line says why
        assert code == "truncated_video" and json.loads(streamed.text.splitlines()[-1])["error"]["code"] == code
    else:  # refused from its headers, before the stream began: the status says it
        assert (streamed.status_code, streamed.json()["error"]["code"]) == (status, code)
    assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
