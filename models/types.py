"""Typed results shared by every model family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face, in original-image pixels.

    Attributes:
        bbox: (x1, y1, x2, y2) floats.
        score: detector confidence in [0, 1].
        landmarks: (5, 2) float32 array ordered left eye, right eye, nose,
            left mouth corner, right mouth corner (image left/right), or None
            when the detector gives no landmarks.
    """

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None

    def to_json(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 5),
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@dataclass(frozen=True)
class CropSpec:
    """How a downstream model wants its face crops cut out of the frame.

    ``kind="landmarks"`` warps the 5 landmarks onto ``template`` (pixel
    coordinates in a ``size`` x ``size`` crop); ``kind="box"`` cuts the box
    grown by ``margin`` on each side, squared, and resizes it to ``size``.
    A landmarks spec falls back to the box crop when a face has no landmarks.
    """

    kind: Literal["landmarks", "box"]
    size: tuple[int, int]  # (width, height)
    template: tuple[tuple[float, float], ...] | None = None
    margin: float = 0.0
    # Which landmarks the similarity fit uses (None: all five).
    points: tuple[int, ...] | None = None
    # "pixel": the fitted transform maps pixel centres; "dlib": dlib's face-chip sampling
    # (chip corners onto the transformed rectangle), which its recognizer was trained with.
    convention: Literal["pixel", "dlib"] = "pixel"


@dataclass(frozen=True)
class Classification:
    """A deepfake classifier's verdict for one face crop."""

    fake_probability: float
    label: str
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"fake_probability": round(float(self.fake_probability), 5), "label": self.label}
