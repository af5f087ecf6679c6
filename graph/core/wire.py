"""What crosses between deployments besides the detector's request and reply (``models.pipeline``).

Every reply names the model that made it: the answer reports what really ran, and a vector is
stored under the embedding space of the replica that computed it, even during a rolling update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facegraph.models.embedding import Decision, EmbeddingSpace, ImpostorModel, Match, Metric
from facegraph.models.pipeline import DetectReply
from facegraph.models.types import Classification, CropSpec
from facegraph.models.video import VideoInfo


@dataclass(frozen=True)
class Embeddings:
    """One request's face embeddings (F, D) and the space and match threshold of the replica that made them."""

    vectors: np.ndarray
    space: EmbeddingSpace
    match_threshold: float
    model: dict[str, Any]
    # Distances between different people measured with this recognizer (None: unknown).
    impostors: ImpostorModel | None = None


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
    # The 1:1 threshold; with ``false_match_rate`` the gallery tightens it for its size.
    threshold: float
    false_match_rate: float | None = None
    # The recognizer's impostor distances, for a gallery too small to measure its own.
    impostors: ImpostorModel | None = None


@dataclass(frozen=True)
class SearchAnswer:
    """Per face, its top-k subjects (``match`` set by ``decision.threshold``), and the decision used."""

    faces: list[list[Match]]
    decision: Decision


@dataclass(frozen=True)
class VideoRequest:
    """A clip for the detector stage to sample and detect: its bytes, its probed headers, and what to cut."""

    video: bytes
    info: VideoInfo
    fps: float
    max_frames: int
    crops: dict[str, CropSpec]
    min_score: float | None = None


@dataclass(frozen=True)
class FrameReplies:
    """A chunk of a clip's sampled frames, detected: per frame its ordinal, its time and the detector's reply."""

    indexes: tuple[int, ...]
    timestamps: tuple[float, ...]
    replies: tuple[DetectReply, ...]
