"""Typed results shared by every model family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np


# Landmark names, "left" and "right" as seen in the picture. A detector gives the points it
# really finds and names them; alignment fits whichever of its template's points a face has.
FIVE_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
LANDMARK_NAMES = FIVE_POINTS + ("mouth_center", "left_ear", "right_ear")


def eye_distance(landmarks, points: Sequence[str]) -> float | None:
    """Pixels between the two eyes of landmark rows named by ``points``; None when they name no eyes."""
    if landmarks is None or not {"left_eye", "right_eye"} <= set(points):
        return None
    left, right = landmarks[list(points).index("left_eye")], landmarks[list(points).index("right_eye")]
    return float(np.hypot(*(np.asarray(right, np.float64) - np.asarray(left, np.float64))))


@dataclass(frozen=True)
class Face:
    """One detected face, in original-image pixels.

    Attributes:
        bbox: (x1, y1, x2, y2) floats.
        score: detector confidence in [0, 1].
        landmarks: (K, 2) float32 array, row k being the point ``points[k]``, or None
            when the detector gives no landmarks.
        points: the names of the landmark rows (from ``LANDMARK_NAMES``); five-point
            detectors give ``FIVE_POINTS``.
    """

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    points: tuple[str, ...] = FIVE_POINTS

    @property
    def eye_distance(self) -> float | None:
        """Pixels between the two eyes, or None when the detector gives no eyes."""
        return eye_distance(self.landmarks, self.points)

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

    ``kind="landmarks"`` fits a similarity from the face's landmarks onto ``template``
    (pixel coordinates in a ``size`` crop, row k being the point ``points[k]``), using
    every template point the face has (``models.geometry.alignment_points`` says which,
    and refuses too few); ``kind="box"`` cuts the box grown by ``margin`` on each side,
    squared, and resizes it to ``size``. A landmarks spec falls back to the box crop
    when a face has no landmarks at all.
    """

    kind: Literal["landmarks", "box"]
    size: tuple[int, int]  # (width, height)
    template: tuple[tuple[float, float], ...] | None = None
    margin: float = 0.0
    # The names of the template's rows.
    points: tuple[str, ...] = FIVE_POINTS
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
