"""Detector deployment: decodes pictures, finds faces, cuts the crops each branch needs."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np
from ray import serve

from facegraph.deployments.base import ModelReplica
from facegraph.graph.core.wire import FrameReplies, VideoRequest
from facegraph.models.registry import ModelSpec
from facegraph.models.pipeline import DetectReply, DetectRequest, detect_batch
from facegraph.models.video import Frame, VideoLimits, sample


def _next(frames: Iterator[Frame], size: int) -> list[Frame]:
    return list(itertools.islice(frames, size))


@serve.deployment
class Detector(ModelReplica):
    stage = "detector"

    def __init__(self, spec: ModelSpec, cache_dir: Path | None, max_pixels: int, video: VideoLimits):
        super().__init__(spec, cache_dir)
        self.max_pixels = max_pixels
        self.video = video

    def batch_method(self):
        return self.detect

    @serve.batch  # its knobs come from the config, through reconfigure
    async def detect(self, requests: list[DetectRequest]) -> list[DetectReply]:
        started = time.perf_counter()
        # Off the event loop, so the next batch keeps forming while this one runs.
        replies = await asyncio.to_thread(detect_batch, self.adapter, requests, self.max_pixels)
        self.record(len(requests), started)
        return [replace(reply, model=self.model) for reply in replies]

    async def detect_video(self, request: VideoRequest) -> AsyncIterator[FrameReplies]:
        """Sample a clip in this replica, so its whole frames never leave it, and detect them through the
        same batches as pictures; yields the detections a batch's worth of frames at a time."""
        frames = sample(request.video, request.info, request.fps, request.max_frames, self.video)
        try:
            while chunk := await asyncio.to_thread(_next, frames, self.batching.max_batch_size):  # decoding is off the event loop too
                replies = await asyncio.gather(*(self.detect(DetectRequest(f.image, request.crops, min_score=request.min_score)) for f in chunk))
                yield FrameReplies(tuple(f.index for f in chunk), tuple(f.timestamp_s for f in chunk), tuple(replies))
        finally:
            frames.close()  # a cancelled clip frees its decoder now

    def probe(self) -> None:
        # Cheaper than a warm-up frame: health checks run every few seconds.
        self.adapter.detect([np.zeros((64, 64, 3), np.uint8)])

    def warm(self, batch_size: int) -> None:
        # A VGA frame: the shapes a typical picture's pyramid levels take.
        self.adapter.detect([np.zeros((480, 640, 3), np.uint8)] * batch_size)
