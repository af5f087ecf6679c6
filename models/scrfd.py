"""SCRFD (insightface ``det_*.onnx``): per-stride scores, distance boxes and landmarks, 2 anchors."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from models.base import TensorSig, run_batched, signature_error
from models.letterboxed import LetterboxDetector
from models.types import FIVE_POINTS

STRIDES = (8, 16, 32)
ANCHORS = 2


@lru_cache(maxsize=32)
def anchor_centres(height: int, width: int, stride: int) -> np.ndarray:
    """(h*w*ANCHORS, 2) anchor centres in input pixels, row-major, anchors repeated."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centres, ANCHORS, axis=0)


class Scrfd(LetterboxDetector):
    """Outputs: scores x3, boxes x3, [landmarks x3], each (A, k) or (N, A, k)."""

    family = "scrfd"
    # What the family may give; a 6-output file gives none (set per file below).
    landmarks = FIVE_POINTS
    pad_value = 0
    mean = 127.5
    scale = 1.0 / 128.0

    def check_outputs(self) -> None:
        outputs = self.session.get_outputs()
        ranks = {len(o.shape or []) for o in outputs}
        lasts = [(o.shape or [None])[-1] for o in outputs]
        ok = len(outputs) in (6, 9) and len(ranks) == 1 and ranks <= {2, 3}
        ok = ok and lasts[:3] == [1] * 3 and lasts[3:6] == [4] * 3 and lasts[6:] in ([], [10] * 3)
        if not ok:
            raise signature_error(
                self.family,
                [TensorSig(4, (None, 3, None, None), "input.1")],
                [TensorSig(2, (None, 1), "score_s")] * 3 + [TensorSig(2, (None, 4), "bbox_s")] * 3 + [TensorSig(2, (None, 10), "kps_s")] * 3,
                self.session,
                "expected 6 or 9 outputs: scores, boxes and optional landmarks for strides 8, 16, 32",
            )
        self.batched_outputs = ranks == {3}
        if not self.batched_outputs:
            self.fixed_one = True  # outputs without a batch axis: one image per call
        self.with_landmarks = len(outputs) == 9
        self.landmarks = FIVE_POINTS if self.with_landmarks else None

    def decode(self, outputs, index):
        boxes, scores, points = [], [], []
        for level, stride in enumerate(STRIDES):
            centres = anchor_centres(self.height, self.width, stride)
            dist = outputs[level + 3][index] * stride
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            scores.append(outputs[level][index][:, 0])
            if self.with_landmarks:
                kps = outputs[level + 6][index].reshape(-1, 5, 2) * stride
                points.append(kps + centres[:, None, :])
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
