"""dlib's face recognition ResNet: 150x150 face chips -> 128-d descriptors; < 0.6 apart is one person."""

from __future__ import annotations

import numpy as np

from facegraph.models.base import FamilySettings, Recognizer, TensorSig, check_signature, fixed_batch, run_batched
from facegraph.models.embedding import ImpostorModel
from facegraph.models.types import CropSpec

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# Input normalisation stored in dlib's file (input_rgb_image_sized): (pixel - mean) / 256.
INPUT_MEAN = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0

# dlib's mean face shape (get_face_chip_details; 68-point indexing, unit square) at the
# points our detectors give: eye centres (mean of each eye's six points), nose tip,
# mouth corners, in image left/right order.
_MEAN_SHAPE = {
    "left_eye": ((0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743), (0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077)),
    "right_eye": ((0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335), (0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099)),
    "nose": ((0.490127,), (0.515625,)),
    "mouth_left": ((0.254149,), (0.780233,)),
    "mouth_right": ((0.726104,), (0.780233,)),
}


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> tuple[tuple[float, float], ...]:
    """The 5 points' places in dlib's face chip of ``size`` with ``padding``."""
    points = []
    for xs, ys in _MEAN_SHAPE.values():
        x, y = float(np.mean(xs)), float(np.mean(ys))
        points.append(((padding + x) / (1 + 2 * padding) * size, (padding + y) / (1 + 2 * padding) * size))
    return tuple(points)


ALIGNMENT_POINTS = ("left_eye", "right_eye", "nose")

# Descriptor distances between different people, measured with BlazeFace's points + this model on
# ../shared/photos and scikit-image's astronaut and camera man: 130 pairs (the faces within each
# group photo, the two group photos' non-matching faces, and the single faces against all). Used
# until a gallery holds enough subjects to measure its own. CenterFace's points give mean 0.8039,
# sd 0.0773 on the same pairs (2026-12-06): these wider figures give the stricter thresholds, so
# they serve both.
IMPOSTORS = ImpostorModel(mean=0.8018, std=0.0857, pairs=130, source="dlib-resnet with BlazeFace on 17 faces of 11 people, 2026-12-01")


class DlibResNetSettings(FamilySettings):
    # Descriptor distance below which two faces are the same person (dlib's published value).
    distance_threshold: float = 0.6


class DlibResNetRecognizer(Recognizer):
    family = "dlib-resnet"
    Settings = DlibResNetSettings
    metric = "euclidean"
    alignment_points = ALIGNMENT_POINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        check_signature(
            self.family, self.session, [TensorSig(4, (None, 3, CHIP_SIZE, CHIP_SIZE), "input")], [TensorSig(2, (None, 128), "descriptor")]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_one = fixed_batch(self.session)
        self._mean = np.asarray(INPUT_MEAN, np.float32)

    @property
    def crop_spec(self) -> CropSpec:
        # Eyes and nose only, as dlib's own 5-point alignment (eye corners, nose base)
        # ignores the mouth; the mouth corners of a smiling face would pull the chip.
        return CropSpec("landmarks", (CHIP_SIZE, CHIP_SIZE), chip_template()[:3], points=ALIGNMENT_POINTS, convention="dlib")

    @property
    def dimension(self) -> int:
        return 128

    @property
    def impostors(self) -> ImpostorModel:
        return IMPOSTORS

    @property
    def match_threshold(self) -> float:
        return self.settings.distance_threshold

    def embed(self, crops):
        if not crops:
            return np.zeros((0, 128), np.float32)
        batch = ((np.stack(crops).astype(np.float32) - self._mean) / INPUT_SCALE).transpose(0, 3, 1, 2)
        (out,) = run_batched(self.session, self.input_name, np.ascontiguousarray(batch), self.fixed_one)
        return out.astype(np.float32)
