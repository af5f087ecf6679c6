"""Recognizer deployment: embeddings for aligned face crops, batched across requests by face count."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve

from deployments.base import ModelReplica
from models.gallery import EmbeddingSpace
from models.pipeline import embed_batch


@serve.deployment
class Recognizer(ModelReplica):
    role = "recognizer"
    stage = "recognizer"

    def batch_method(self):
        return self.embed

    def crop_spec(self):
        return self.adapter.crop_spec

    def info(self) -> dict:
        """The embedding space this replica produces, and how its embeddings are compared."""
        space = EmbeddingSpace(
            family=self.loaded.spec.family,
            digest=self.loaded.digest,
            variant=self.loaded.spec.variant,
            dimension=self.adapter.dimension,
            metric=self.adapter.metric,
        )
        return {"space": space, "match_threshold": self.adapter.match_threshold}

    # A batch is capped by faces, not requests: one request may carry many faces.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, batch_size_fn=lambda groups: sum(len(g) for g in groups))
    async def embed(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        out = await asyncio.to_thread(embed_batch, self.adapter, groups)
        self.record(sum(len(g) for g in groups), started)
        return out

    def warm(self, batch_size: int) -> None:
        width, height = self.adapter.crop_spec.size
        self.adapter.embed([np.zeros((height, width, 3), np.uint8)] * batch_size)
