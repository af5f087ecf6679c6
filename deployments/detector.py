"""Detector deployment: decodes pictures, finds faces, cuts the crops each branch needs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from ray import serve

from facegraph.deployments.base import ModelReplica
from facegraph.models.registry import ModelSpec
from facegraph.models.pipeline import DetectReply, DetectRequest, detect_batch


@serve.deployment
class Detector(ModelReplica):
    stage = "detector"

    def __init__(self, spec: ModelSpec, cache_dir: Path | None, max_pixels: int):
        super().__init__(spec, cache_dir)
        self.max_pixels = max_pixels

    def batch_method(self):
        return self.detect

    @serve.batch  # its knobs come from the config, through reconfigure
    async def detect(self, requests: list[DetectRequest]) -> list[DetectReply]:
        started = time.perf_counter()
        # Off the event loop, so the next batch keeps forming while this one runs.
        replies = await asyncio.to_thread(detect_batch, self.adapter, requests, self.max_pixels)
        self.record(len(requests), started)
        return [replace(reply, model=self.model) for reply in replies]

    def probe(self) -> None:
        # Cheaper than a warm-up frame: health checks run every few seconds.
        self.adapter.detect([np.zeros((64, 64, 3), np.uint8)])

    def warm(self, batch_size: int) -> None:
        # A VGA frame: the shapes a typical picture's pyramid levels take.
        self.adapter.detect([np.zeros((480, 640, 3), np.uint8)] * batch_size)
