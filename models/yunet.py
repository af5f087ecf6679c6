"""OpenCV's YuNet (``face_detection_yunet_*.onnx``, the model behind ``cv2.FaceDetectorYN``).

Defaults reproduce OpenCV's ``FaceDetectorYN`` (``modules/objdetect/src/face_detect.cpp``):
the BGR picture at its own size, raw 0-255, zero-padded right and bottom to a multiple of
32; strides 8, 16, 32 with one anchor per cell, row-major; score ``sqrt(clip(cls) *
clip(obj))``; boxes and landmarks decoded from the cell; ``cv2.dnn.NMSBoxes`` on the boxes
truncated to integers, IoU 0.3, at most ``top_k`` candidates. Boxes are not clipped.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from facegraph.models.base import Detector, FamilySettings, TensorSig, signature_error
from facegraph.models.types import FIVE_POINTS, Face

STRIDES = (8, 16, 32)
DIVISOR = 32
OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)
_WIDTHS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}


class YunetSettings(FamilySettings):
    # OpenCV's create() defaults to 0.9; on party photos 0.9 lost 8 of 43 faces where 0.6 lost 1.
    score_threshold: float = 0.6
    nms_iou: float = 0.3
    # Candidates NMS looks at, best first (FaceDetectorYN's top_k).
    top_k: int = Field(5000, ge=1)
    # Pictures with a longer side past this are scaled down first (None: full size, as OpenCV).
    max_side: int | None = Field(None, ge=32)


class Yunet(Detector):
    """Twelve outputs ``cls_8`` ... ``kps_32``, each (1, anchors, 1 | 4 | 10); input (1, 3, H, W) BGR 0-255."""

    family = "yunet"
    Settings = YunetSettings
    # YuNet's points, in its order: the eye on the picture's left first, then nose, mouth corners.
    landmarks = FIVE_POINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = {o.name: o for o in outputs}
        shape = list(inputs[0].shape or []) if len(inputs) == 1 else []
        fits = len(shape) == 4 and shape[1] == 3 and set(OUTPUTS) <= set(names)
        fits = fits and all((names[n].shape or [None])[-1] == _WIDTHS[n.split("_")[0]] for n in OUTPUTS if n in names)
        if not fits:
            raise signature_error(
                self.family,
                [TensorSig(4, (1, 3, None, None), "input")],
                [TensorSig(3, (1, None, _WIDTHS[n.split("_")[0]]), n) for n in OUTPUTS],
                self.session,
                "expected outputs named cls_8 ... kps_32, as OpenCV's YuNet exports have",
            )
        self.input_name = inputs[0].name
        # A file exported for one size can only take that size: pictures are fitted into it.
        self.fixed = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None

    def _scaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The picture the network sees and its scale from the original."""
        h, w = image.shape[:2]
        limit = self.settings.max_side
        scale = min(1.0, limit / max(h, w)) if limit else 1.0
        if self.fixed:
            scale = min(scale, self.fixed[0] / h, self.fixed[1] / w)
        if scale < 1.0:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return image, scale

    def _run(self, image: np.ndarray) -> tuple[list[np.ndarray], int, int]:
        """The twelve outputs as (anchors, k) for one picture, and the padded height and width."""
        h, w = image.shape[:2]
        pad_h, pad_w = self.fixed or (((h - 1) // DIVISOR + 1) * DIVISOR, ((w - 1) // DIVISOR + 1) * DIVISOR)
        canvas = np.zeros((pad_h, pad_w, 3), np.float32)
        canvas[:h, :w] = image[..., ::-1]  # RGB -> BGR, as FaceDetectorYN is fed
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
        outs = self.session.run(list(OUTPUTS), {self.input_name: blob})
        return [o.reshape(-1, o.shape[-1]) for o in outs], pad_h, pad_w

    def decode(self, outs: list[np.ndarray], pad_h: int, pad_w: int) -> np.ndarray:
        """(N, 15) rows as FaceDetectorYN gives them: x, y, w, h, 5 landmarks (x, y), score."""
        rows = []
        for level, stride in enumerate(STRIDES):
            cls, obj, box, kps = (outs[level + len(STRIDES) * k] for k in range(4))
            cols_n = pad_w // stride
            cells = (pad_h // stride) * cols_n
            cls, obj, box, kps = cls[:cells], obj[:cells], box[:cells], kps[:cells]
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            keep = np.nonzero(score >= self.settings.score_threshold)[0]
            col = (keep % cols_n).astype(np.float32)[:, None]
            row = (keep // cols_n).astype(np.float32)[:, None]
            b = box[keep]
            cx, cy = (col[:, 0] + b[:, 0]) * stride, (row[:, 0] + b[:, 1]) * stride
            w, h = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            points = np.empty((len(keep), 10), np.float32)
            points[:, 0::2] = (kps[keep][:, 0::2] + col) * stride
            points[:, 1::2] = (kps[keep][:, 1::2] + row) * stride
            rows.append(np.column_stack([cx - w / 2, cy - h / 2, w, h, points, score[keep]]).astype(np.float32))
        return np.concatenate(rows) if rows else np.zeros((0, 15), np.float32)

    def suppress(self, rows: np.ndarray) -> np.ndarray:
        """FaceDetectorYN's NMS: on the boxes truncated to integers, score threshold and top_k applied."""
        if len(rows) <= 1:
            return rows
        s = self.settings
        boxes = np.trunc(rows[:, :4]).astype(np.float64)
        keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14].astype(np.float64), float(s.score_threshold), float(s.nms_iou), top_k=s.top_k)
        return rows[np.asarray(keep, np.int64).reshape(-1)]

    def detect(self, images):
        results = []
        for image in images:
            seen, scale = self._scaled(image)
            rows = self.suppress(self.decode(*self._run(seen)))
            rows[:, :14] /= np.float32(scale)
            results.append(
                [
                    Face(
                        bbox=(float(r[0]), float(r[1]), float(r[0] + r[2]), float(r[1] + r[3])),
                        score=float(r[14]),
                        landmarks=r[4:14].reshape(5, 2).astype(np.float32),
                    )
                    for r in rows
                ]
            )
        return results
