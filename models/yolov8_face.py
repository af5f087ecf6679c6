"""YOLOv8-face / YOLOv5-face style detector: boxes, score and 5 landmarks per anchor."""

from __future__ import annotations

import numpy as np

from facegraph.models.base import TensorSig, signature_error
from facegraph.models.ultralytics import UltralyticsDetector
from facegraph.models.types import FIVE_POINTS

# Per anchor: cx, cy, w, h, face score, then 5 landmarks as (x, y, visibility) or (x, y).
_WITH_VISIBILITY, _WITHOUT_VISIBILITY = 20, 15


class Yolov8Face(UltralyticsDetector):
    """Output (N, 20, A) or (N, A, 20) (15 without landmark visibility), input pixels in [0, 1]."""

    family = "yolov8-face"
    landmarks = FIVE_POINTS

    def check_outputs(self) -> None:
        outputs = self.session.get_outputs()
        shape = list(outputs[0].shape or []) if outputs else []
        channels = [d for d in shape[1:] if d in (_WITH_VISIBILITY, _WITHOUT_VISIBILITY)]
        if len(outputs) != 1 or len(shape) != 3 or not channels:
            raise signature_error(
                self.family,
                [TensorSig(4, (None, 3, None, None), "images")],
                [TensorSig(3, (None, 20, None), "output")],
                self.session,
                "expected one output of shape (N, 20 or 15, anchors) or (N, anchors, 20 or 15)",
            )
        self.channels_first = shape[1] in (_WITH_VISIBILITY, _WITHOUT_VISIBILITY)

    def decode(self, outputs, index):
        pred = outputs[0][index]
        if self.channels_first:
            pred = pred.T
        cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        step = 3 if pred.shape[1] == _WITH_VISIBILITY else 2
        kps = pred[:, 5:].reshape(-1, 5, step)[:, :, :2]
        return boxes, pred[:, 4].astype(np.float32), kps
