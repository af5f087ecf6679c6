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


@dataclass(frozen=True)
class ImpostorModel:
    """Distances between faces of different people, summarised: where false matches come from.

    ``mean`` and ``std`` of the distances (as in ``Match``), ``pairs`` how many were measured,
    ``source`` where (a gallery's own subjects, or a recognizer's measurement), and ``sample``
    the sorted distances themselves when kept (for empirical quantiles).
    """

    mean: float
    std: float
    pairs: int
    source: str
    sample: tuple[float, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The match threshold an identification used, and why (reported with every answer)."""

    threshold: float
    rule: Literal["fixed", "recognizer", "false-match-rate"]
    reason: str
    false_match_rate: float | None = None
    gallery_faces: int = 0
    impostor_pairs: int = 0

    def to_json(self) -> dict:
        return {
            "threshold": round(self.threshold, 6),
            "rule": self.rule,
            "reason": self.reason,
            "false_match_rate": self.false_match_rate,
            "gallery_faces": self.gallery_faces,
            "impostor_pairs": self.impostor_pairs,
        }


# Empirical quantiles need this many impostor distances below the quantile; fewer and the normal fit extrapolates.
_TAIL_SAMPLES = 10


def impostor_distance_at(impostors: ImpostorModel, rate: float) -> float:
    """The distance below which a share ``rate`` of impostor pairs falls.

    Empirical where the sample holds enough of the tail, else extrapolated from a normal fit
    (real impostor tails are usually heavier, so at large galleries this errs on the loose side).
    """
    from statistics import NormalDist

    sample = impostors.sample
    if sample and rate * len(sample) >= _TAIL_SAMPLES:
        return float(np.quantile(np.asarray(sample), rate))
    return float(NormalDist(impostors.mean, max(impostors.std, 1e-6)).inv_cdf(min(max(rate, 1e-300), 0.5)))


def identification_decision(
    metric: Metric, base: float, false_match_rate: float | None, gallery_faces: int, impostors: ImpostorModel | None
) -> Decision:
    """The threshold for one search of a gallery of ``gallery_faces`` faces.

    A stranger's probe meets every enrolled face; for at most a share ``false_match_rate`` of
    such searches to return anyone, each comparison may match an impostor with probability
    ``1 - (1 - rate) ** (1 / faces)``: the threshold is that quantile of the impostor
    distances. It is never looser than ``base`` (the 1:1 threshold). Without a target rate,
    or without impostor distances, the threshold is ``base``.
    """
    if false_match_rate is None:
        return Decision(base, "fixed", "gallery.false_match_rate is off: the configured threshold", None, gallery_faces)
    if impostors is None:
        return Decision(base, "fixed", "no impostor distances are known for this recognizer: its own threshold", false_match_rate, gallery_faces)
    per_face = 1.0 - (1.0 - false_match_rate) ** (1.0 / max(gallery_faces, 1))
    distance = impostor_distance_at(impostors, per_face)
    # The threshold as the metric states it: a distance (euclidean) or a similarity (cosine).
    fitted = distance if metric == "euclidean" else 1.0 - distance
    threshold = min(fitted, base) if metric == "euclidean" else max(fitted, base)
    rule = "false-match-rate" if impostors.source == "gallery" else "recognizer"
    where = (
        f"{impostors.pairs} impostor pairs of the gallery's own subjects"
        if impostors.source == "gallery"
        else f"the recognizer's impostor distances ({impostors.source}; the gallery holds too few subjects to measure its own)"
    )
    capped = " (capped at the 1:1 threshold)" if threshold == base and fitted != base else ""
    reason = f"at most {false_match_rate:g} false matches per search over {gallery_faces} faces, from {where}{capped}"
    return Decision(float(threshold), rule, reason, false_match_rate, gallery_faces, impostors.pairs)
