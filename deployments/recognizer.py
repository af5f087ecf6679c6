"""Recognizer deployment: embeddings for aligned face crops, batched across requests by face count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ray import serve

from facegraph.deployments.base import ModelReplica, faces_in, in_batches
from facegraph.graph.core.wire import Embeddings
from facegraph.graph.core.stages import embedding_space
from facegraph.models.pipeline import check_crops, embed_batch
from facegraph.models.registry import ModelSpec


@serve.deployment
class Recognizer(ModelReplica):
    stage = "recognizer"

    def __init__(self, spec: ModelSpec, cache_dir: Path | None):
        super().__init__(spec, cache_dir)
        self.space = embedding_space(self.loaded)

    def batch_method(self):
        return self.embed_crops

    def crop_spec(self):
        return self.adapter.crop_spec

    def info(self) -> dict:
        """The embedding space this replica produces, and how its embeddings are compared."""
        return {"space": self.space, "match_threshold": self.adapter.match_threshold, "impostors": self.adapter.impostors}

    async def embed(self, crops: np.ndarray) -> Embeddings:
        """Any number of one request's crops (F, H, W, 3), with the space the vectors belong to."""
        check_crops(crops, self.adapter.crop_spec, self.stage)
        parts = await in_batches(self.embed_crops, crops, self.batching.max_batch_size) if len(crops) else []
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.space.dimension), np.float32)
        return Embeddings(vectors, self.space, self.adapter.match_threshold, self.model, self.adapter.impostors)

    # A batch is capped by faces, not requests: ``embed`` splits a request into pieces that fit.
    @serve.batch(batch_size_fn=faces_in)
    async def embed_crops(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        return await self.run_faces(embed_batch, groups)

    def warm(self, batch_size: int) -> None:
        width, height = self.adapter.crop_spec.size
        self.adapter.embed([np.zeros((height, width, 3), np.uint8)] * batch_size)
