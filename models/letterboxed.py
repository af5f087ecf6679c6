"""Shared machinery for single-shot detectors that take a letterboxed square-ish input."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from models.base import Detector, FamilySettings, fixed_batch, run_batched, signature_error, TensorSig
from models.geometry import Letterbox, letterbox, nms
from models.types import Face


class LetterboxSettings(FamilySettings):
    score_threshold: float = 0.5
    nms_iou: float = 0.45
    max_faces: int = 100
    # Used only when the model's input height/width are dynamic.
    input_size: int = 640


class LetterboxDetector(Detector):
    """Letterbox in, decode per family, threshold + NMS + cap, map back to original pixels."""

    Settings = LetterboxSettings
    pad_value: ClassVar[int] = 114
    mean: ClassVar[float] = 0.0
    scale: ClassVar[float] = 1.0 / 255.0
    needs_nms: ClassVar[bool] = True

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

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        batch = np.empty((len(images), 3, self.height, self.width), np.float32)
        boxes = []
        for i, image in enumerate(images):
            canvas, box = letterbox(image, self.width, self.height, self.pad_value)
            batch[i] = ((canvas.astype(np.float32) - self.mean) * self.scale).transpose(2, 0, 1)
            boxes.append(box)
        return batch, boxes

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        batch, boxes = self.preprocess(images)
        outputs = run_batched(self.session, self.input_name, batch, self.fixed_one)
        return [self.postprocess(outputs, i, boxes[i], images[i].shape[1], images[i].shape[0]) for i in range(len(images))]

    def postprocess(self, outputs, index: int, box: Letterbox, width: int, height: int) -> list[Face]:
        s = self.settings
        boxes, scores, landmarks = self.decode(outputs, index)
        keep = scores >= s.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        landmarks = landmarks[keep] if landmarks is not None else None
        order = nms(boxes, scores, s.nms_iou) if self.needs_nms else np.argsort(-scores, kind="stable")
        order = order[: s.max_faces]
        boxes = box.boxes_to_original(boxes[order], width, height)
        points = box.points_to_original(landmarks[order]) if landmarks is not None else None
        faces = []
        for i in range(len(order)):
            if boxes[i, 2] - boxes[i, 0] < 1 or boxes[i, 3] - boxes[i, 1] < 1:
                continue  # a box that lies wholly in the padding
            faces.append(
                Face(
                    bbox=tuple(float(v) for v in boxes[i]),
                    score=float(scores[order[i]]),
                    landmarks=None if points is None else points[i].astype(np.float32),
                )
            )
        return faces
