"""facegraph.models.video: hostile clips get typed errors from their headers; sampling gives the right frames at the right times."""

from __future__ import annotations

import io
import sys

import av
import numpy as np
import pytest
from pydantic import ValidationError

from facegraph.benchmarks.video_decode import encode
from facegraph.models.errors import VideoError, VideoTooLargeError
from facegraph.models.video import VideoLimits, probe, sample
from tests.video_clips import declared_size_bomb


def colour_frames(count: int, width: int = 160, height: int = 96) -> list[np.ndarray]:
    """Frame k's left half is grey 20 + 20 (k mod 10), its right half 20 + 20 (k div 10): a sampled
    frame tells which source frame it was, through any codec's rounding."""
    frames = []
    for k in range(count):
        image = np.empty((height, width, 3), np.uint8)
        image[:, : width // 2] = 20 + 20 * (k % 10)
        image[:, width // 2 :] = 20 + 20 * (k // 10)
        frames.append(image)
    return frames


def source_index(image: np.ndarray) -> int:
    half = image.shape[1] // 2
    left, right = (float(image[4:-4, 4 : half - 4].mean()), float(image[4:-4, half + 4 : -4].mean()))
    return int(round((left - 20) / 20)) + 10 * int(round((right - 20) / 20))


@pytest.fixture(scope="module")
def h264() -> bytes:
    return encode(colour_frames(100), "h264", fps=25)  # 4 s


@pytest.fixture(scope="module")
def vp9() -> bytes:
    return encode(colour_frames(100), "vp9", fps=25)


def audio_only(container: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=48000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def fragmented_mp4() -> bytes:
    """An MP4 written as it streams (its index first, then fragments): a cut leaves the start readable."""
    import av as _av

    buffer = io.BytesIO()
    with _av.open(buffer, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=25, options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for image in colour_frames(100):
            for packet in stream.encode(_av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def refusal(data: bytes, limits: VideoLimits | None = None) -> VideoError:
    """The error that probing, then sampling every frame, ends with."""
    with pytest.raises(VideoError) as caught:
        info = probe(data, limits)
        list(sample(data, info, limits=limits))
    return caught.value


@pytest.mark.parametrize(
    "name, make, code",
    [
        ("bytes that are not a video", lambda c: np.random.default_rng(0).bytes(20_000), "invalid_video"),
        ("a text file sent as video/mp4", lambda c: b"Dear moderator,\nthis is not a video.\n" * 50, "invalid_video"),
        ("an HTML page", lambda c: b"<!doctype html><html><body>" + b"x" * 4000 + b"</body></html>", "invalid_video"),
        ("no bytes", lambda c: b"", "empty_video"),
        ("an MP4 cut in half (its index was at the end)", lambda c: c["h264"][: len(c["h264"]) // 2], "invalid_video"),
        ("a WebM cut in half", lambda c: c["vp9"][: len(c["vp9"]) // 2], "truncated_video"),
        ("an MP4 holding only audio", lambda c: audio_only("mp4", "aac"), "no_video_stream"),
        ("a WebM holding only audio", lambda c: audio_only("webm", "libopus"), "no_video_stream"),
        ("an MP4 with zero frames", lambda c: encode([], "h264", size=(160, 96)), "empty_video"),
        ("a WebM with zero frames", lambda c: encode([], "vp9", size=(160, 96)), "empty_video"),
        ("a declared 20000x20000 frame size", lambda c: declared_size_bomb(20000, 20000), "frame_too_large"),
    ],
)
def test_each_hostile_input_gets_its_typed_error(name, make, code, h264, vp9):
    error = refusal(make({"h264": h264, "vp9": vp9}))
    assert error.code == code, f"{name}: {error.code} {error.message}"
    assert isinstance(error, VideoTooLargeError) == (code.endswith("_large") or code.endswith("_long"))


def test_the_limits_refuse_from_the_headers(h264):
    assert refusal(h264, VideoLimits(max_duration_s=3.0)).code == "video_too_long"
    assert "facegraph batch" in refusal(h264, VideoLimits(max_duration_s=3.0)).message
    assert refusal(h264, VideoLimits(max_video_bytes=1024)).code == "video_too_large"
    assert refusal(h264, VideoLimits(max_pixels=160 * 96 - 1)).code == "frame_too_large"
    assert probe(h264, VideoLimits(max_pixels=160 * 96, max_duration_s=4.0)).width == 160


def live_webm(frames: list[np.ndarray]) -> bytes:
    """A WebM written as a browser's recorder writes it: no duration, no index."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx-vp9", rate=25, options={"deadline": "realtime", "cpu-used": "8"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def test_a_clip_that_declares_no_duration_is_held_to_the_limit_while_it_decodes():
    data = live_webm(colour_frames(100))  # 4 s
    limits = VideoLimits(max_duration_s=3.0)
    info = probe(data, limits)
    assert (info.duration_s, info.frame_count, info.expected_samples(2, 50)) == (0.0, 0, 50)
    frames = []
    with pytest.raises(VideoTooLargeError) as caught:
        frames.extend(sample(data, info, limits=limits))
    assert caught.value.code == "video_too_long" and len(frames) == 7  # 0 to 3.0 s, then 3.04 s is past the limit
    assert [source_index(f.image) for f in sample(data, info, fps=1)] == [0, 25, 50, 75]


def test_a_declared_frame_size_is_refused_before_any_frame_is_decoded():
    bomb = declared_size_bomb(20000, 20000)
    error = refusal(bomb)
    assert "20000x20000" in error.message
    # The same clip declaring its true size decodes: the refusal came from the size alone.
    honest = declared_size_bomb(320, 288)
    info = probe(honest)
    assert (info.codec, info.width, info.height) == ("mjpeg", 320, 288)
    assert len(list(sample(honest, info))) == 2


def test_a_cut_stream_yields_what_decodes_then_a_typed_error(vp9):
    cut = vp9[: len(vp9) // 2]
    info = probe(cut)
    frames = []
    with pytest.raises(VideoError) as caught:
        for f in sample(cut, info):
            frames.append(f)
    assert caught.value.code == "truncated_video" and "truncated" in caught.value.message
    assert frames and [f.index for f in frames] == list(range(len(frames)))


def test_a_streamed_mp4_cut_between_fragments_reads_as_the_shorter_clip_it_holds():
    """Its header declares no total length, so nothing says frames are missing: the frames it holds, then a clean stop."""
    whole = fragmented_mp4()
    cut = whole[: len(whole) // 2]
    info = probe(cut)
    assert 0 < info.duration_s < probe(whole).duration_s
    frames = list(sample(cut, info))
    assert [source_index(f.image) for f in frames] == [0, 13, 25, 38][: len(frames)] and frames[-1].timestamp_s <= info.duration_s


def test_probe_reads_what_the_headers_say(h264, vp9):
    for data, container, codec in ((h264, "mov,mp4,m4a,3gp,3g2,mj2", "h264"), (vp9, "matroska,webm", "vp9")):
        info = probe(data)
        assert (info.container, info.codec, info.width, info.height, info.fps) == (container, codec, 160, 96, 25.0)
        assert info.duration_s == pytest.approx(4.0, abs=0.05) and info.frame_count == 100 and info.size_bytes == len(data)
        assert info.to_json()["duration_s"] == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_sampling_takes_the_first_frame_at_or_after_each_multiple_of_one_over_fps(codec, h264, vp9):
    data = {"h264": h264, "vp9": vp9}[codec]
    info = probe(data)
    frames = list(sample(data, info, fps=2))
    # 25 fps: source frames at k / 25 s; the one at or after 0.5 s is frame 13 (0.52 s).
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52])
    assert [source_index(f.image) for f in frames] == [0, 13, 25, 38, 50, 63, 75, 88]
    assert [f.index for f in frames] == list(range(8)) and len(frames) == info.expected_samples(2, 100)
    assert frames[0].image.shape == (96, 160, 3) and frames[0].image.dtype == np.uint8
    assert [f.timestamp_s for f in sample(data, info, fps=2, max_frames=3)] == pytest.approx([0.0, 0.52, 1.0])
    assert info.expected_samples(2, 3) == 3


def test_sampling_at_the_source_rate_or_faster_yields_every_frame_once():
    data = encode(colour_frames(12), "h264", fps=6)  # 2 s at 6 fps
    info = probe(data)
    assert [source_index(f.image) for f in sample(data, info, fps=6)] == list(range(12))
    assert [source_index(f.image) for f in sample(data, info, fps=30)] == list(range(12))
    assert [f.timestamp_s for f in sample(data, info, fps=1)] == pytest.approx([0.0, 1.0])
    thirty = encode(colour_frames(60), "vp9", fps=30)
    assert [f.timestamp_s for f in sample(thirty, probe(thirty), fps=2)] == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_frames_come_out_rgb(h264):
    red = [np.zeros((96, 160, 3), np.uint8) for _ in range(5)]
    for image in red:
        image[..., 0] = 220
    data = encode(red, "h264", fps=5)
    first = next(sample(data, probe(data)))
    assert np.abs(first.image.reshape(-1, 3).mean(0) - [220, 0, 0]).max() < 8


def test_a_sampling_rate_of_zero_is_refused(h264):
    with pytest.raises(VideoError) as caught:
        list(sample(h264, probe(h264), fps=-1))
    assert caught.value.code == "invalid_query"


def test_nothing_is_opened_from_python_while_a_clip_is_read(h264):
    """Probing and sampling work on the bytes only: no file is opened (FFmpeg reads through the file object)."""
    opened = []

    def hook(event, args):
        if event == "open" and recording:
            opened.append(args[0])

    recording = False
    sys.addaudithook(hook)
    recording = True
    try:
        info = probe(h264)
        frames = list(sample(h264, info))
    finally:
        recording = False
    assert frames and opened == []


def test_the_limits_are_a_strict_settings_model():
    limits = VideoLimits()
    assert (limits.fps, limits.max_pixels) == (2.0, 40_000_000)
    with pytest.raises(ValidationError):
        VideoLimits(max_fps=3)
    with pytest.raises(ValidationError):
        VideoLimits(fps=0)
