"""A clip through the stages: sampled frames detected where they are decoded, their faces through the
branches, the faces linked into tracks, each track named and scored. Ray-free, as the rest of the core.

The detector stage decodes and samples the clip itself (``models.video``), so whole frames never
leave it; it streams the sampled frames' detections back a chunk at a time (``FrameReplies``).
Each chunk's crops go through the recognizer and deepfake branches as a picture's do
(:meth:`graph.core.analysis.Analysis.branches_of`); :meth:`VideoAnalysis.events` yields a progress
event per chunk, then the answer. Tracks come from ``models.tracking``; a track's identity from
gallery searches of its best embeddings, under the identify route's decision rule.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import numpy as np

from facegraph.graph.core.analysis import Analysis, Branches, Options
from facegraph.graph.core.wire import Embeddings, FrameReplies, VideoRequest, Verdicts
from facegraph.models.embedding import Decision, Match
from facegraph.models.errors import FacegraphError
from facegraph.models.types import Face
from facegraph.models.tracking import FrameFaces, Track, TrackingSettings, track_faces, track_identity
from facegraph.models.video import VideoInfo, VideoLimits, probe

# The detector stage's stream of a clip's detections, a chunk of sampled frames at a time.
FrameStream = Callable[[VideoRequest], AsyncIterator[FrameReplies]]
# Per track, the gallery's best match for each of its probe embeddings, and the decision used.
TrackSearch = Callable[[Embeddings], Awaitable[tuple[list[Match | None], Decision]]]


@dataclass
class VideoOptions:
    """What one clip's analysis asks for (the query of ``POST /v1/analyze/video``)."""

    fps: float | None = None
    max_frames: int | None = None
    identify: bool = False
    deepfake: bool = True
    embeddings: bool = False
    min_score: float | None = None


@dataclass
class _Clip:
    """What the chunks of one clip have given so far."""

    frames: list[FrameFaces] = field(default_factory=list)
    space: Embeddings | None = None  # one frame's embeddings: the space, metric and threshold of the recognizer
    detector: dict | None = None
    deepfake: dict | None = None
    degraded: set[str] = field(default_factory=set)


class VideoAnalysis:
    """Clips over the same stages as pictures; ``frames_of`` is the detector's streaming call."""

    def __init__(
        self,
        analysis: Analysis,
        frames_of: FrameStream,
        limits: VideoLimits,
        tracking: TrackingSettings | None = None,
        low_quality: Callable[[Face], bool] | None = None,
    ):
        self.analysis, self.frames_of, self.limits = analysis, frames_of, limits
        self.tracking = tracking or TrackingSettings()
        # The eye-distance floor of the identity policy (``Identities.low_quality``); none without a gallery.
        self.low_quality = low_quality or (lambda face: False)

    async def probe(self, video: bytes) -> VideoInfo:
        """The clip's headers, refused here (typed errors) before any frame is decoded."""
        if len(video) > self.limits.max_video_bytes:
            raise FacegraphError(f"the video is {len(video)} bytes; the limit is {self.limits.max_video_bytes}", "video_too_large")
        return await asyncio.to_thread(probe, video, self.limits)

    async def events(
        self, video: bytes, options: VideoOptions, search: TrackSearch | None = None, info: VideoInfo | None = None
    ) -> AsyncIterator[dict]:
        """``{"progress": {...}}`` after each chunk of sampled frames, then ``{"answer": {...}}``; ``info``: the clip already probed."""
        started = time.perf_counter()
        info = info or await self.probe(video)
        fps, max_frames = options.fps or self.limits.fps, options.max_frames or self.limits.max_frames
        total = info.expected_samples(fps, max_frames)
        # The recognizer runs whenever it is configured: its embeddings are what keep a person's track across gaps.
        stages = self.analysis.stages(Options(recognize=True, deepfake=options.deepfake, identify=options.identify))
        specs = await self.analysis.crop_specs()
        request = VideoRequest(video, info, fps, max_frames, {s: specs[s] for s in stages}, options.min_score)
        clip = _Clip()
        async for chunk in self.frames_of(request):
            await self._take(chunk, stages, clip)
            yield {"progress": {"frames_done": len(clip.frames), "frames_total": max(total, len(clip.frames))}}
        tracks = self._tracks(clip)
        identities, decision = await self._identities(tracks, clip, search) if options.identify and search is not None else (None, None)
        answer = {
            "video": info.to_json(),
            "sampling": {"fps": fps, "frames": len(clip.frames), "max_frames": max_frames},
            "tracks": [_track_json(t, options, identities) for t in tracks],
            "models": {
                "detector": clip.detector,
                "recognizer": clip.space.model if clip.space is not None else None,
                "deepfake": clip.deepfake,
            },
            "timings_ms": {"total": round((time.perf_counter() - started) * 1000, 2)},
        }
        if decision is not None:
            answer["identification"] = decision.to_json()
        if clip.degraded:
            answer["degraded"] = sorted(clip.degraded)
        yield {"answer": answer}

    async def analyze(self, video: bytes, options: VideoOptions, search: TrackSearch | None = None) -> dict:
        """The answer alone (the JSON route and the handle API)."""
        answer = None
        async for event in self.events(video, options, search):
            answer = event.get("answer", answer)
        return answer

    async def _take(self, chunk: FrameReplies, stages: tuple[str, ...], clip: _Clip) -> None:
        """One chunk's faces through the branches, concurrently; each frame's faces, embeddings and probabilities kept."""
        outcomes: list[Branches] = await asyncio.gather(*(self.analysis.branches_of(reply, stages, {}) for reply in chunk.replies))
        for index, timestamp, reply, outcome in zip(chunk.indexes, chunk.timestamps, chunk.replies, outcomes):
            if reply.error is not None:
                raise FacegraphError(reply.error.message, reply.error.code)
            clip.detector = clip.detector or reply.model
            clip.degraded.update(outcome.degraded)
            embedded, verdicts = outcome.embedded, outcome.verdicts
            if isinstance(embedded, Embeddings):
                clip.space = clip.space or embedded
            if isinstance(verdicts, Verdicts):
                clip.deepfake = clip.deepfake or verdicts.model
            vectors = embedded.vectors if isinstance(embedded, Embeddings) else None
            if not reply.faces and "recognizer" in stages:
                vectors = np.zeros((0, clip.space.space.dimension if clip.space else 0), np.float32)
            probabilities = tuple(v.fake_probability for v in verdicts.rows) if isinstance(verdicts, Verdicts) else None
            if not reply.faces and "deepfake" in stages:
                probabilities = ()
            clip.frames.append(FrameFaces(index, timestamp, reply.faces, vectors, probabilities))

    def _tracks(self, clip: _Clip) -> list[Track]:
        if clip.space is None:  # no embeddings (no recognizer, or it failed): boxes link
            return track_faces(_without_embeddings(clip.frames), self.tracking)
        frames = clip.frames if all(f.embeddings is not None for f in clip.frames) else _without_embeddings(clip.frames)
        return track_faces(frames, self.tracking, clip.space.space.metric, clip.space.match_threshold)

    async def _identities(self, tracks: list[Track], clip: _Clip, search: TrackSearch) -> tuple[dict[int, dict], Decision | None]:
        """Per track with embeddings, its identity from the searches of its best few embeddings."""
        probed = [t for t in tracks if t.best_embeddings is not None and len(t.best_embeddings)]
        if not probed or clip.space is None:
            return {}, None
        space = clip.space
        answers = await asyncio.gather(
            *(search(Embeddings(t.best_embeddings, space.space, space.match_threshold, space.model, space.impostors)) for t in probed)
        )
        out = {t.track_id: track_identity(matches, t.low_quality(self.low_quality)).to_json() for t, (matches, _) in zip(probed, answers)}
        return out, answers[0][1]


def _without_embeddings(frames: list[FrameFaces]) -> list[FrameFaces]:
    return [FrameFaces(f.index, f.timestamp_s, f.faces, None, f.fake_probabilities) for f in frames]


def _track_json(track: Track, options: VideoOptions, identities: dict[int, dict] | None) -> dict:
    item = track.to_json(embeddings=options.embeddings)
    if not options.deepfake:
        item.pop("deepfake", None)
    if identities is not None:
        item.update(identities.get(track.track_id) or {"identity": None, "votes": 0, "probes": 0, "low_quality": None})
    return item

