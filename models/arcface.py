"""ArcFace recognizer in insightface's layout: aligned crops -> L2-normalised embedding.

Defaults reproduce insightface 0.7.3 (``model_zoo/arcface_onnx.py``, ``utils/face_align.py``):
the input normalisation is read from the graph (a model converted from MXNet starts with
Sub and Mul nodes and takes raw pixels; any other takes ``(x - 127.5) / 127.5``), and the
5-point template is scaled by size/112 for multiples of 112, or by size/128 and shifted
right by 8 x size/128 for multiples of 128.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegraph.models.base import FamilySettings, Recognizer, TensorSig, check_signature, fixed_batch, run_batched
from facegraph.models.geometry import ARCFACE_TEMPLATE_112, scale_template
from facegraph.models.types import FIVE_POINTS, CropSpec

# The five template points plus the mouth centre (between the corners), so detectors that give
# the mouth's centre instead of its corners (BlazeFace) align onto the same template.
_MOUTH_CENTRE = tuple(float(v) for v in (np.asarray(ARCFACE_TEMPLATE_112[3]) + np.asarray(ARCFACE_TEMPLATE_112[4])) / 2)
TEMPLATE_POINTS = FIVE_POINTS + ("mouth_center",)
TEMPLATE_112 = ARCFACE_TEMPLATE_112 + (_MOUTH_CENTRE,)
# insightface's normalisations: for MXNet conversions (which normalise inside the graph) and the rest.
RAW_PIXELS, CENTRED = (0.0, 1.0), (127.5, 127.5)


def graph_normalisation(model) -> tuple[float, float]:
    """(mean, std) as insightface picks them: raw pixels when the first 8 nodes hold a Sub and a Mul."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False)
    names = [node.name for node in proto.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return RAW_PIXELS if has_sub and has_mul else CENTRED


def arcface_template(width: int, height: int) -> tuple[tuple[float, float], ...]:
    """The template (with the mouth centre) for a ``width`` x ``height`` crop, as insightface's ``estimate_norm``."""
    if width == height and width % 112 and not width % 128:
        ratio = width / 128.0
        return tuple((x * ratio + 8.0 * ratio, y * ratio) for x, y in TEMPLATE_112)
    return scale_template(TEMPLATE_112, (112, 112), (width, height))


class ArcFaceSettings(FamilySettings):
    # Cosine similarity at or above which two faces are the same person.
    similarity_threshold: float = 0.4
    # None: read from the graph as insightface does (see graph_normalisation).
    input_mean: float | None = None
    input_std: float | None = None


class ArcFace(Recognizer):
    family = "arcface"
    Settings = ArcFaceSettings
    metric = "cosine"
    alignment_points = TEMPLATE_POINTS

    def __init__(self, sessions, settings=None, normalisation: tuple[float, float] = CENTRED, **resources):
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
        self.mean = self.settings.input_mean if self.settings.input_mean is not None else normalisation[0]
        self.std = self.settings.input_std if self.settings.input_std is not None else normalisation[1]

    @classmethod
    def read_resources(cls, model: Path | bytes | None, folder: Path | None) -> dict:
        """The input normalisation the graph implies (insightface's rule)."""
        return {} if model is None else {"normalisation": graph_normalisation(model)}

    def describe(self) -> dict:
        return {**super().describe(), "input_mean": self.mean, "input_std": self.std}

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec("landmarks", self.size, arcface_template(*self.size), points=TEMPLATE_POINTS)

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
        batch = ((batch - self.mean) / self.std).transpose(0, 3, 1, 2)
        (raw,) = run_batched(self.session, self.input_name, np.ascontiguousarray(batch), self.fixed_one)[:1]
        raw = raw.reshape(len(crops), -1).astype(np.float32)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
