"""Deepfake classifier deployment: a fake probability per face crop."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve

from deployments.base import ModelReplica
from models.pipeline import classify_batch
from models.types import Classification


@serve.deployment
class DeepfakeClassifier(ModelReplica):
    role = "classifier"
    stage = "deepfake"

    def batch_method(self):
        return self.classify

    def crop_spec(self):
        return self.adapter.crop_spec

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, batch_size_fn=lambda groups: sum(len(g) for g in groups))
    async def classify(self, groups: list[np.ndarray]) -> list[list[Classification]]:
        started = time.perf_counter()
        out = await asyncio.to_thread(classify_batch, self.adapter, groups)
        self.record(sum(len(g) for g in groups), started)
        return out

    def warm(self, batch_size: int) -> None:
        width, height = self.adapter.crop_spec.size
        self.adapter.classify([np.zeros((height, width, 3), np.uint8)] * batch_size)
