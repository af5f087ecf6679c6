"""What crosses between deployments besides the detector's request and reply (``models.pipeline``).

Every reply names the model that made it: the answer reports what really ran, and a vector is
stored under the embedding space of the replica that computed it, even during a rolling update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.embedding import EmbeddingSpace, Metric
from models.types import Classification


@dataclass(frozen=True)
class Embeddings:
    """One request's face embeddings (F, D) and the space and match threshold of the replica that made them."""

    vectors: np.ndarray
    space: EmbeddingSpace
    match_threshold: float
    model: dict[str, Any]


@dataclass(frozen=True)
class Verdicts:
    """One request's deepfake verdicts, one per face, and the classifier that gave them."""

    rows: list[Classification]
    model: dict[str, Any]


@dataclass(frozen=True)
class SearchRequest:
    """One picture's face embeddings (F, D) to identify in one embedding space."""

    embeddings: np.ndarray
    space: str
    metric: Metric
    top_k: int
    threshold: float
