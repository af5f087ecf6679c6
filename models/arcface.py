"""ArcFace recognizer in insightface's layout: 112x112 aligned crops -> L2-normalised embedding."""

from __future__ import annotations

import numpy as np

from models.base import FamilySettings, Recognizer, TensorSig, check_signature, fixed_batch, run_batched
from models.geometry import ARCFACE_TEMPLATE_112, scale_template
from models.types import FIVE_POINTS, CropSpec

# The five template points plus the mouth centre (between the corners), so detectors that give
# the mouth's centre instead of its corners (BlazeFace) align onto the same template.
_MOUTH_CENTRE = tuple(float(v) for v in (np.asarray(ARCFACE_TEMPLATE_112[3]) + np.asarray(ARCFACE_TEMPLATE_112[4])) / 2)
TEMPLATE_POINTS = FIVE_POINTS + ("mouth_center",)
TEMPLATE_112 = ARCFACE_TEMPLATE_112 + (_MOUTH_CENTRE,)


class ArcFaceSettings(FamilySettings):
    # Cosine similarity at or above which two faces are the same person.
    similarity_threshold: float = 0.4
    input_mean: float = 127.5
    input_std: float = 127.5


class ArcFace(Recognizer):
    family = "arcface"
    Settings = ArcFaceSettings
    metric = "cosine"
    alignment_points = TEMPLATE_POINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        check_signature(
            self.family, self.session, [TensorSig(4, (None, 3, None, None), "input")], [TensorSig(2, (None, None), "embedding")]
        )
        inp = self.session.get_inputs()[0]
        height, width = inp.shape[2], inp.shape[3]
        self.size = (width if isinstance(width, int) else 112, height if isinstance(height, int) else 112)
        dim = self.session.get_outputs()[0].shape[1]
        self._dimension = dim if isinstance(dim, int) else None
        self.input_name = inp.name
        self.fixed_one = fixed_batch(self.session)

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec("landmarks", self.size, scale_template(TEMPLATE_112, (112, 112), self.size), points=TEMPLATE_POINTS)

    @property
    def dimension(self) -> int:
        return self._dimension or int(self.embed([np.zeros((self.size[1], self.size[0], 3), np.uint8)]).shape[1])

    @property
    def match_threshold(self) -> float:
        return self.settings.similarity_threshold

    def embed(self, crops):
        if not crops:
            return np.zeros((0, self._dimension or 0), np.float32)
        batch = np.stack(crops).astype(np.float32)
        batch = ((batch - self.settings.input_mean) / self.settings.input_std).transpose(0, 3, 1, 2)
        (raw,) = run_batched(self.session, self.input_name, np.ascontiguousarray(batch), self.fixed_one)[:1]
        raw = raw.reshape(len(crops), -1).astype(np.float32)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
