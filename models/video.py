"""Video from untrusted bytes, in memory: read the headers, then sample RGB frames (PyAV).

:func:`probe` reads the container's and the stream's headers and refuses, before any frame is
decoded, what is not a video we take, what has no picture, and what is over a limit (bytes,
declared frame size, duration). :func:`sample` decodes from the same bytes (a file object over
them: nothing is written to disk) and yields frames at a sampling rate, each as RGB uint8.

Why PyAV and decode-and-drop rather than OpenCV or seeking: ``benchmarks/video_decode.py`` and
the README's "Video (in progress)". FFmpeg itself is held to the limits too: only the MP4 and
Matroska demuxers may open the bytes, only the decoders of ``VIDEO_CODECS`` may run, and every
decoder (also the one FFmpeg runs while it reads the stream's parameters) gets ``max_pixels``, so
a frame that declares more pixels is refused before its buffer is allocated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import VideoError, VideoTooLargeError
from .imaging import DEFAULT_MAX_PIXELS


# FFmpeg's demuxer names: MP4/QuickTime (video/mp4, video/quicktime) and Matroska/WebM
# (video/x-matroska, video/webm). A text file can otherwise open as FFmpeg's "tty" demuxer.
VIDEO_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
_FORMAT_WHITELIST = ",".join(VIDEO_FORMATS)
# The codecs cameras, phones, webcams and browsers write; FFmpeg's other decoders never see request bytes.
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg")
_DECODERS = ("h264", "hevc", "vp8", "libvpx", "vp9", "libvpx-vp9", "av1", "libdav1d", "libaom-av1", "mpeg4", "mjpeg")
# A stream may end this far before its declared duration (rounding, a last frame's length).
_END_SLACK_S = 1.0


class VideoLimits(BaseModel):
    """What a clip may be: the config's video limits (the ingress checks the body size as it streams)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_video_bytes: int = Field(200 * 2**20, ge=1024)
    # Longer clips belong to `facegraph batch`.
    max_duration_s: float = Field(600.0, gt=0)
    # Per frame, as for pictures: refused from the stream's header.
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    # Default sampling rate (frames per second of video) and cap on sampled frames.
    fps: float = Field(2.0, gt=0, le=60)
    max_frames: int = Field(1200, ge=1)
    # Decoder threads: 1 fits a replica that holds half a core (README, Video).
    decode_threads: int = Field(1, ge=1, le=16)


@dataclass(frozen=True)
class VideoInfo:
    """What the headers say about a clip's video stream.

    Attributes:
        container: FFmpeg's demuxer name (one of ``VIDEO_FORMATS``).
        codec: the video codec (one of ``VIDEO_CODECS``).
        width, height: declared frame size in pixels.
        fps: average frame rate (frames per second; 0.0 when the headers give none).
        duration_s: seconds (0.0 when the headers give none: a live WebM recording).
        frame_count: frames, as declared or estimated from duration x fps (0 when neither is known).
        size_bytes: the clip's length in bytes.
    """

    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    size_bytes: int

    def expected_samples(self, fps: float, max_frames: int) -> int:
        """How many frames :func:`sample` will yield at ``fps`` (an estimate when the duration is unknown: ``max_frames``)."""
        if self.duration_s <= 0:
            return max_frames
        every = int(np.floor(self.duration_s * fps - 1e-9)) + 1
        if self.frame_count:
            every = min(every, self.frame_count)
        return min(every, max_frames)

    def to_json(self) -> dict:
        return {
            "container": self.container, "codec": self.codec, "width": self.width, "height": self.height,
            "fps": round(self.fps, 3), "duration_s": round(self.duration_s, 3), "frame_count": self.frame_count,
        }  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """One sampled frame.

    Attributes:
        index: the sampled frame's ordinal (0, 1, ...): what tracks name frames by.
        timestamp_s: its presentation time, seconds from the stream's start.
        image: (H, W, 3) RGB uint8.
    """

    index: int
    timestamp_s: float
    image: np.ndarray


def _open(data: bytes, limits: VideoLimits, threads: int = 1, decoders: bool = True) -> av.container.InputContainer:
    """A demuxer over the bytes (MP4 or Matroska only), its decoders held to ``max_pixels``.

    ``decoders=False`` lets FFmpeg open no decoder at all while it reads the streams' parameters,
    so what it reports is what the headers declare, and nothing is decoded.
    """
    try:
        return av.open(
            io.BytesIO(data),
            mode="r",
            container_options={"format_whitelist": _FORMAT_WHITELIST, "codec_whitelist": ",".join(_DECODERS) if decoders else "none"},
            # Also given to the decoders FFmpeg opens while it reads the streams' parameters.
            options={"max_pixels": str(limits.max_pixels), "threads": str(threads)},
        )
    except av.error.EOFError:
        raise VideoError("the video ends before its first frame (empty, or cut short)", code="empty_video") from None
    except av.error.FFmpegError as exc:
        raise VideoError(f"the bytes are not a supported video (MP4, QuickTime, Matroska, WebM): {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """FFmpeg's own words for a failure, never the payload (it names no bytes)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def probe(data: bytes, limits: VideoLimits | None = None) -> VideoInfo:
    """Read a clip's headers only and check them against ``limits``.

    Raises:
        VideoError: ``empty_video`` (no bytes, or a stream that declares no frame), ``invalid_video``
            (not MP4/QuickTime/Matroska/WebM, or unreadable: a cut MP4 whose index was at its end),
            ``no_video_stream`` (audio only), ``unsupported_video_codec``.
        VideoTooLargeError: ``video_too_large`` (bytes), ``frame_too_large`` (declared width x height
            over ``max_pixels``), ``video_too_long`` (declared duration over ``max_duration_s``).
    """
    limits = limits or VideoLimits()
    if not data:
        raise VideoError("the request carries no video bytes", code="empty_video")
    if len(data) > limits.max_video_bytes:
        raise VideoTooLargeError(f"the video is {len(data)} bytes; the limit is {limits.max_video_bytes}")
    # First the headers alone (no decoder runs): their declared frame size is checked before anything is decoded.
    with _open(data, limits, decoders=False) as container:
        if container.format.name not in VIDEO_FORMATS:  # the whitelist already refuses it; said plainly
            raise VideoError(f"the container {container.format.name!r} is not MP4, QuickTime, Matroska or WebM")
        if not container.streams:
            raise VideoError("the file holds no stream at all", code="empty_video")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise VideoError(f"the file holds no video stream (only {', '.join(kinds)})", code="no_video_stream")
        stream = container.streams.video[0]
        _check_pixels(int(stream.codec_context.width), int(stream.codec_context.height), limits)
        codec = stream.codec_context.name
        if codec not in VIDEO_CODECS:
            raise VideoError(f"the video codec {codec!r} is not one of {', '.join(VIDEO_CODECS)}", code="unsupported_video_codec")
    # Then with the decoders, held to max_pixels: a stream whose own header declares more than its
    # container does is refused by FFmpeg before it allocates the frame, and reads as 0 x 0.
    with _open(data, limits) as container:
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width < 1 or height < 1:
            raise VideoError(
                f"the video stream's frame size could not be read: corrupt, or over the limit of {limits.max_pixels} pixels",
                code="invalid_video",
            )
        _check_pixels(width, height, limits)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        duration = _duration_s(container, stream)
        if duration > limits.max_duration_s:
            raise VideoTooLargeError(
                f"the video lasts {duration:.1f} s; the limit for one request is {limits.max_duration_s:g} s: "
                "analyse longer clips with `facegraph batch`",
                code="video_too_long",
            )
        frames = int(stream.frames) or (int(round(duration * fps)) if duration and fps else 0)
        if stream.frames == 0 and duration == 0 and _declares_no_frame(container, stream):
            raise VideoError("the video stream holds no frame", code="empty_video")
        return VideoInfo(container.format.name, codec, width, height, fps, duration, frames, len(data))


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise VideoTooLargeError(
            f"the video's frames are {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
            code="frame_too_large",
        )


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _declares_no_frame(container, stream) -> bool:
    """An MP4's sample table counts its frames; Matroska gives no count, so its first packet is read (no decoding)."""
    if container.format.name != "matroska,webm":
        return True
    for packet in container.demux(stream):
        if packet.size:
            return False
    return True


def _start(stream) -> Fraction:
    return Fraction(stream.start_time or 0) * stream.time_base if stream.time_base else Fraction(0)


def sample(
    data: bytes, info: VideoInfo, fps: float | None = None, max_frames: int | None = None, limits: VideoLimits | None = None
) -> Iterator[Frame]:
    """Frames at ``fps`` (default ``limits.fps``), at most ``max_frames``, decoded from memory.

    Every frame is decoded (decode-and-drop: the measurement found it faster than seeking at
    sampling rates of 1 fps and up) and the first frame at or after each multiple of
    ``1 / fps`` is converted and yielded; a stream slower than ``fps`` yields each of its frames.

    Raises (after yielding the frames that decoded):
        VideoError: ``truncated_video`` (the stream ends more than a second before its declared
            end, or its data is cut or corrupt), ``empty_video`` (no frame decodes).
        VideoTooLargeError: ``frame_too_large`` (a frame larger than its header said, over
            ``max_pixels``), ``video_too_long`` (frames past ``max_duration_s``: a clip
            that declares no duration, or less than it holds).
    """
    limits = limits or VideoLimits()
    fps = float(fps or limits.fps)
    max_frames = int(max_frames or limits.max_frames)
    if fps <= 0 or max_frames < 1:
        raise VideoError(f"the sampling rate must be above 0 and max_frames at least 1 (got {fps}, {max_frames})", code="invalid_query")
    # A frame counts as reaching a target a quarter of a source frame early (timestamps are rounded).
    slack = 0.25 / info.fps if info.fps > 0 else 0.0
    last_t = -1.0
    index, next_target = 0, 0.0
    with _open(data, limits, limits.decode_threads) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"max_pixels": str(limits.max_pixels)}
        stream.codec_context.thread_count = limits.decode_threads
        start = _start(stream)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base - start)
                last_t = max(last_t, t)
                _check_duration(t, limits)  # a clip that declares no duration, or a shorter one than it holds
                if t + slack < next_target:
                    continue
                _check_pixels(frame.width, frame.height, limits)
                yield Frame(index, round(t, 6), frame.to_ndarray(format="rgb24"))
                index += 1
                if index >= max_frames:
                    return
                # The next multiple of 1 / fps after this frame (a stream slower than fps skips targets).
                next_target = (np.floor((t + slack) * fps + 1e-9) + 1) / fps
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"the video's data is cut or corrupt after {max(last_t, 0):.2f} s ({_reason(exc)})", code="truncated_video"
            ) from None
    _check_end(last_t, info)


def _check_duration(t: float, limits: VideoLimits) -> None:
    if t > limits.max_duration_s:
        raise VideoTooLargeError(
            f"the video runs past {limits.max_duration_s:g} s, the limit for one request: analyse it with `facegraph batch`",
            code="video_too_long",
        )


def _check_end(last_t: float, info: VideoInfo) -> None:
    """A stream that decoded no frame, or ended well before its declared end."""
    if last_t < 0:
        raise VideoError("no frame of the video could be decoded", code="empty_video")
    if info.duration_s > 0 and last_t + _END_SLACK_S < info.duration_s - (1.0 / info.fps if info.fps else 0.0):
        raise VideoError(
            f"the video ends at {last_t:.2f} s but declares {info.duration_s:.2f} s: is it truncated?", code="truncated_video"
        )
