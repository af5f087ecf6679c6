"""YOLOv10 end-to-end detector: (N, K, 6) rows of x1, y1, x2, y2, score, class; no NMS, no landmarks."""

from __future__ import annotations

import numpy as np

from facegraph.models.base import TensorSig, signature_error
from facegraph.models.ultralytics import UltralyticsDetector, UltralyticsSettings


class Yolov10Settings(UltralyticsSettings):
    # Keep only this class id (None: every class counts as a face).
    face_class: int | None = None


class Yolov10(UltralyticsDetector):
    family = "yolov10"
    Settings = Yolov10Settings
    needs_nms = False

    def check_outputs(self) -> None:
        outputs = self.session.get_outputs()
        shape = list(outputs[0].shape or []) if outputs else []
        if len(outputs) != 1 or len(shape) != 3 or shape[2] != 6:
            raise signature_error(
                self.family,
                [TensorSig(4, (None, 3, None, None), "images")],
                [TensorSig(3, (None, 300, 6), "output0")],
                self.session,
            )

    def decode(self, outputs, index):
        rows = outputs[0][index]
        if self.settings.face_class is not None:
            rows = rows[rows[:, 5].round() == self.settings.face_class]
        return rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), None
