"""Deepfake classifier deployment: a fake probability per face crop."""

from __future__ import annotations

import numpy as np
from ray import serve

from facegraph.deployments.base import ModelReplica, faces_in, in_batches
from facegraph.graph.core.wire import Verdicts
from facegraph.models.pipeline import check_crops, classify_batch
from facegraph.models.types import Classification


@serve.deployment
class DeepfakeClassifier(ModelReplica):
    stage = "deepfake"

    def batch_method(self):
        return self.classify_crops

    def crop_spec(self):
        return self.adapter.crop_spec

    async def classify(self, crops: np.ndarray) -> Verdicts:
        """Any number of one request's crops (F, H, W, 3): one verdict each."""
        check_crops(crops, self.adapter.crop_spec, self.stage)
        parts = await in_batches(self.classify_crops, crops, self.batching.max_batch_size) if len(crops) else []
        return Verdicts([row for part in parts for row in part], self.model)

    @serve.batch(batch_size_fn=faces_in)
    async def classify_crops(self, groups: list[np.ndarray]) -> list[list[Classification]]:
        return await self.run_faces(classify_batch, groups)

    def warm(self, batch_size: int) -> None:
        width, height = self.adapter.crop_spec.size
        self.adapter.classify([np.zeros((height, width, 3), np.uint8)] * batch_size)
