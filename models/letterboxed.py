"""Shared machinery for single-shot detectors that take a letterboxed square-ish input.

Each family letterboxes, thresholds, suppresses, caps and maps back the way its home
project does (see the README's "Bring your own model" table); the settings below hold
the knobs, with the home project's values as each family's defaults.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal, Sequence

import numpy as np
from pydantic import Field

from facegraph.models.base import Detector, FamilySettings, fixed_batch, run_batched, signature_error, TensorSig
from facegraph.models.geometry import Letterbox, letterbox, nms
from facegraph.models.types import Face


class LetterboxSettings(FamilySettings):
    score_threshold: float = 0.5
    nms_iou: float = 0.45
    # Keep at most this many faces after NMS (0: all of them).
    max_faces: int = Field(100, ge=0)
    # Clip boxes and landmarks to the picture.
    clip: bool = True
    # With clip: drop a box that lies wholly outside the picture (in the padding).
    drop_outside: bool = True
    # Used only when the model's input height/width are dynamic.
    input_size: int = Field(640, ge=32, le=4096)


class LetterboxDetector(Detector):
    """Letterbox in, decode per family, threshold + NMS + cap, map back to original pixels."""

    Settings = LetterboxSettings
    pad_value: ClassVar[int] = 114
    # Input = (pixel - mean) * scale, or (pixel - mean) / divisor where the home project divides.
    mean: ClassVar[float] = 0.0
    scale: ClassVar[float] = 1.0 / 255.0
    divisor: ClassVar[float | None] = None
    needs_nms: ClassVar[bool] = True
    # True: a candidate needs a score above the threshold; False: at or above it.
    strict_threshold: ClassVar[bool] = False
    # How ``max_faces`` picks: by score, or insightface's largest-and-most-central.
    cap_by: ClassVar[Literal["score", "area-centre"]] = "score"
    nms_mode: ClassVar[str] = "union"
    # Suppress on boxes in the picture's pixels (insightface) rather than the model's (Ultralytics).
    nms_in_original: ClassVar[bool] = False

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape or [])
        if len(self.session.get_inputs()) != 1 or len(shape) != 4 or shape[1] != 3:
            raise signature_error(self.family, [TensorSig(4, (None, 3, None, None), "images")], None, self.session)
        self.input_name = inp.name
        self.height = shape[2] if isinstance(shape[2], int) else self.settings.input_size
        self.width = shape[3] if isinstance(shape[3], int) else self.settings.input_size
        self.fixed_one = fixed_batch(self.session)
        self.check_outputs()

    @abstractmethod
    def check_outputs(self) -> None:
        """Raise SignatureError unless the outputs have this family's layout."""

    @abstractmethod
    def decode(self, outputs: list[np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Image ``index``'s candidates in model pixels: boxes (N,4) x1y1x2y2, scores (N,), landmarks (N,5,2) or None."""

    def fit(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The picture on the model's canvas (uint8 (H, W, 3)) and the mapping back."""
        return letterbox(image, self.width, self.height, self.pad_value)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        batch = np.empty((len(images), 3, self.height, self.width), np.float32)
        boxes = []
        for i, image in enumerate(images):
            canvas, box = self.fit(image)
            pixels = canvas.astype(np.float32) - np.float32(self.mean)
            pixels = pixels / np.float32(self.divisor) if self.divisor else pixels * np.float32(self.scale)
            batch[i] = pixels.transpose(2, 0, 1)
            boxes.append(box)
        return batch, boxes

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        batch, boxes = self.preprocess(images)
        outputs = run_batched(self.session, self.input_name, batch, self.fixed_one)
        return [self.postprocess(outputs, i, boxes[i], images[i].shape[1], images[i].shape[0]) for i in range(len(images))]

    def suppress(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices of the candidates NMS keeps, best first."""
        return nms(boxes, scores, self.settings.nms_iou, self.nms_mode)

    def cap(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Indices (into best-first ``boxes`` in original pixels) of the faces ``max_faces`` keeps."""
        keep = np.arange(len(boxes))
        limit = self.settings.max_faces
        if not limit or len(boxes) <= limit:
            return keep
        if self.cap_by == "score":
            return keep[:limit]
        # insightface's FaceAnalysis: largest area, less twice the squared distance from the centre.
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width // 2
        dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height // 2
        return np.argsort(area - (dx**2 + dy**2) * 2.0)[::-1][:limit]

    def postprocess(self, outputs, index: int, box: Letterbox, width: int, height: int) -> list[Face]:
        s = self.settings
        boxes, scores, landmarks = self.decode(outputs, index)
        keep = scores > s.score_threshold if self.strict_threshold else scores >= s.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        landmarks = landmarks[keep] if landmarks is not None else None
        if self.nms_in_original:
            boxes = box.boxes_to_original(boxes, width, height, clip=s.clip)
        order = self.suppress(boxes, scores) if self.needs_nms else np.argsort(-scores, kind="stable")
        boxes = boxes[order] if self.nms_in_original else box.boxes_to_original(boxes[order], width, height, clip=s.clip)
        points = None
        if landmarks is not None:
            points = box.points_to_original(landmarks[order], *((width, height) if s.clip else (None, None)))
        chosen = self.cap(boxes, width, height)
        faces = []
        for i in chosen:
            if s.clip and s.drop_outside and (boxes[i, 2] - boxes[i, 0] < 1 or boxes[i, 3] - boxes[i, 1] < 1):
                continue  # a box that lies wholly in the padding
            faces.append(
                Face(
                    bbox=tuple(float(v) for v in boxes[i]),
                    score=float(scores[order[i]]),
                    landmarks=None if points is None else points[i].astype(np.float32),
                )
            )
        return faces
