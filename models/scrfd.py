"""SCRFD (insightface ``det_*.onnx``): per-stride scores, distance boxes and optional landmarks.

Defaults reproduce insightface 0.7.3 (``model_zoo/scrfd.py`` and ``retinaface.py``, which
``FaceAnalysis`` runs): top-left letterbox with bilinear resize and truncated sizes,
scores at or above 0.5, NMS at IoU 0.4 with sides counted ``+1``, every face kept (a cap,
when set, ranks by area and centre distance), boxes divided by one scale and not clipped.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from pydantic import Field

from facegraph.models.base import TensorSig, run_batched, signature_error
from facegraph.models.errors import SignatureError
from facegraph.models.geometry import nms, top_left_letterbox
from facegraph.models.letterboxed import LetterboxDetector, LetterboxSettings
from facegraph.models.types import FIVE_POINTS

# Three levels (2 anchors per cell) or five (1 anchor per cell), as insightface's exports have.
STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}
_KINDS = {1: "score", 4: "bbox", 10: "kps"}
_NAMED = re.compile(r"^(score|bbox|kps)[_.:/-]?(\d+)$", re.IGNORECASE)


class ScrfdSettings(LetterboxSettings):
    nms_iou: float = 0.4
    max_faces: int = Field(0, ge=0)
    clip: bool = False


@lru_cache(maxsize=32)
def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(h*w*anchors, 2) anchor centres in input pixels, row-major, each repeated per anchor."""
    centres = (np.stack(np.mgrid[: height // stride, : width // stride][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centres, anchors, axis=0)


def output_roles(outputs) -> dict[str, list[int]]:
    """Output indices per kind (score, bbox, kps), each in stride order where names tell it.

    Names like ``score_8`` or ``bbox_32`` (insightface's ``scrfd2onnx`` writes them) decide
    kind and stride; otherwise the last dimension decides the kind (1, 4, 10) and the
    number of rows the stride, at run time (``order_by_rows``).
    """
    named = [_NAMED.match(o.name or "") for o in outputs]
    roles: dict[str, list[int]] = {"score": [], "bbox": [], "kps": []}
    if all(named):
        for kind in roles:
            picked = [(int(m.group(2)), i) for i, m in enumerate(named) if m.group(1).lower() == kind]
            roles[kind] = [i for _, i in sorted(picked)]
        return roles
    for i, o in enumerate(outputs):
        last = (o.shape or [None])[-1]
        if last not in _KINDS:
            raise ValueError(f"output {o.name} has last dimension {last}; expected 1 (scores), 4 (boxes) or 10 (landmarks)")
        roles[_KINDS[last]].append(i)
    return roles


class Scrfd(LetterboxDetector):
    """Outputs: scores, boxes, [landmarks] per stride, each (A, k) or (N, A, k), in any order."""

    family = "scrfd"
    Settings = ScrfdSettings
    # What the family may give; a file without landmark outputs gives none (set per file below).
    landmarks = FIVE_POINTS
    pad_value = 0
    mean = 127.5
    scale = 1.0 / 128.0
    cap_by = "area-centre"
    nms_in_original = True

    @classmethod
    def file_landmarks(cls, outputs) -> tuple[str, ...] | None:
        """The landmarks a file with these outputs gives: five points with landmark outputs, else none."""
        return FIVE_POINTS if len(outputs) in (9, 15) else None

    def check_outputs(self) -> None:
        outputs = self.session.get_outputs()
        ranks = {len(o.shape or []) for o in outputs}
        try:
            roles = output_roles(outputs)
            levels = len(roles["score"])
            ok = levels in STRIDES and len(roles["bbox"]) == levels and len(roles["kps"]) in (0, levels)
            ok = ok and len(ranks) == 1 and ranks <= {2, 3}
        except ValueError as exc:
            ok, note = False, str(exc)
        else:
            note = "expected 6, 9, 10 or 15 outputs: scores, boxes and optional landmarks for strides 8-32 or 8-128"
        if not ok:
            raise signature_error(
                self.family,
                [TensorSig(4, (None, 3, None, None), "input.1")],
                [TensorSig(2, (None, 1), "score_s")] * 3 + [TensorSig(2, (None, 4), "bbox_s")] * 3 + [TensorSig(2, (None, 10), "kps_s")] * 3,
                self.session,
                note,
            )
        self.roles = roles
        self.strides = STRIDES[levels]
        self.by_name = all(_NAMED.match(o.name or "") for o in outputs)
        self.batched_outputs = ranks == {3}
        if not self.batched_outputs:
            self.fixed_one = True  # outputs without a batch axis: one image per call
        self.with_landmarks = bool(roles["kps"])
        self.landmarks = FIVE_POINTS if self.with_landmarks else None

    def suppress(self, boxes, scores):
        # insightface sorts the candidates, then its NMS sorts them again, both with numpy's
        # default (unstable) argsort reversed: equal scores (flat regions) must fall the same way.
        first = scores.argsort()[::-1]
        return first[nms(boxes[first], scores[first], self.settings.nms_iou, "union+1")]

    def fit(self, image):
        return top_left_letterbox(image, self.width, self.height)

    def _levels(self, outputs, kind: str) -> list[np.ndarray]:
        """One kind's outputs for image 0.., in stride order (by name, else most rows first)."""
        picked = [outputs[i] for i in self.roles[kind]]
        if not self.by_name:
            picked.sort(key=lambda t: -t.shape[-2])
        return picked

    def decode(self, outputs, index):
        boxes, scores, points = [], [], []
        score_maps, box_maps = self._levels(outputs, "score"), self._levels(outputs, "bbox")
        kps_maps = self._levels(outputs, "kps") if self.with_landmarks else [None] * len(self.strides)
        for stride, score, dist, kps in zip(self.strides, score_maps, box_maps, kps_maps):
            cells = (self.height // stride) * (self.width // stride)
            rows = score.shape[-2]
            if rows % cells:
                raise SignatureError(f"scrfd output has {rows} rows at stride {stride}; expected a multiple of {cells}")
            centres = anchor_centres(self.height, self.width, stride, rows // cells)
            dist = dist[index] * stride
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            scores.append(score[index][:, 0])
            if kps is not None:
                points.append(kps[index].reshape(-1, 5, 2) * stride + centres[:, None, :])
        return (
            np.concatenate(boxes).astype(np.float32),
            np.concatenate(scores).astype(np.float32),
            np.concatenate(points).astype(np.float32) if points else None,
        )

    def detect(self, images):
        if not images:
            return []
        batch, boxes = self.preprocess(images)
        outputs = run_batched(self.session, self.input_name, batch, self.fixed_one)
        if not self.batched_outputs:
            # Exports without a batch axis were run per image and concatenated: split them back.
            outputs = [t.reshape(len(images), -1, t.shape[-1]) for t in outputs]
        return [self.postprocess(outputs, i, boxes[i], im.shape[1], im.shape[0]) for i, im in enumerate(images)]
