"""Embedding spaces and the match maths: the one place that says how two face embeddings compare.

A recognizer declares its metric and match threshold; the gallery, the verify route and the
optimizer's decision checks all decide "same person" through :func:`is_match` on
:func:`distances`, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class EmbeddingSpace:
    """Which model made an embedding: only embeddings of one space are ever compared.

    Attributes:
        family: recognizer family.
        digest: first 16 hex digits of the sha256 of the model's ONNX file(s).
        variant: fp32, fp16, int8...
        dimension: embedding length.
        metric: ``euclidean`` (distance) or ``cosine`` (similarity) decides a match.
    """

    family: str
    digest: str
    variant: str
    dimension: int
    metric: Metric

    @property
    def key(self) -> str:
        return f"{self.family}:{self.digest}:{self.variant}"


@dataclass(frozen=True)
class Match:
    """One candidate subject for a face: its closest enrolled face.

    ``distance`` is Euclidean for euclidean spaces and 1 - cosine for cosine spaces;
    ``similarity`` is always the cosine of the two embeddings.
    """

    subject_id: str
    name: str
    distance: float
    similarity: float
    match: bool

    def to_json(self) -> dict:
        return {
            "subject_id": self.subject_id,
            "name": self.name,
            "distance": round(self.distance, 6),
            "similarity": round(self.similarity, 6),
            "match": self.match,
        }


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) stacks (or of two vectors, as a 0-d array)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def distances(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """Row-wise distance as in ``Match``: Euclidean, or 1 - cosine for cosine spaces."""
    if metric == "euclidean":
        return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
    return 1.0 - similarities(a, b)


def is_match(distance, metric: Metric, threshold: float):
    """Euclidean: distance below the threshold; cosine: similarity (1 - distance) at or above it.

    Works on one distance (a bool) or an array of them (a bool array).
    """
    return distance < threshold if metric == "euclidean" else 1.0 - distance >= threshold


def compare(a: np.ndarray, b: np.ndarray, metric: Metric) -> tuple[float, float]:
    """(distance, cosine similarity) of two embeddings, distance as in ``Match``."""
    return float(distances(a, b, metric)), float(similarities(a, b))
