"""What Ultralytics' predictor does around a YOLO model (8.4.190: ``LetterBox``, ``non_max_suppression``, ``scale_boxes``).

Shared by the families exported from Ultralytics (``yolov8-face``, ``yolov10``): centred
letterbox, bilinear, grey 114; pixels divided by 255; candidates scoring strictly above
0.25; NMS at IoU 0.7 (no +1) on the model's pixels; at most 300 faces; boxes and
keypoints mapped back per axis and clipped to the picture.
"""

from __future__ import annotations

from pydantic import Field

from facegraph.models.geometry import ultralytics_letterbox
from facegraph.models.letterboxed import LetterboxDetector, LetterboxSettings


class UltralyticsSettings(LetterboxSettings):
    score_threshold: float = 0.25
    nms_iou: float = 0.7
    max_faces: int = Field(300, ge=0)
    # Ultralytics keeps a clipped box even when it lies wholly outside the picture.
    drop_outside: bool = False


class UltralyticsDetector(LetterboxDetector):
    """A letterboxed detector whose pre- and post-processing follow Ultralytics' predictor."""

    Settings = UltralyticsSettings
    divisor = 255.0
    strict_threshold = True

    def fit(self, image):
        return ultralytics_letterbox(image, self.width, self.height, self.pad_value)
