"""BlazeFace (MediaPipe's face detectors): SSD anchors, boxes and six keypoints, weighted NMS.

Decoding follows MediaPipe's own graph configuration for these models
(``face_detection_*_common.pbtxt``): the picture is letterboxed, centred on black,
into the square input with pixels in [-1, 1]; each anchor regresses a box centre and
size and six keypoints, in input pixels relative to the anchor's centre (anchors
have a fixed unit size); scores are clipped to +-100 and passed through a sigmoid;
overlapping detections (IoU > 0.3) are merged by MediaPipe's weighted NMS.

The full-range model sees 192 x 192 pixels, so small faces in large pictures fall
below what it can find. ``tile_above`` runs such pictures also as overlapping
tiles (``tiles`` x ``tiles``, each ``tile_fraction`` of the side) and merges every
detection with the same weighted NMS; a tile's detection that touches a tile edge
inside the picture is dropped (the face is whole in the picture or another tile).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, Sequence

import cv2
import numpy as np
from pydantic import Field

from facegraph.models.base import FamilySettings, TensorSig, cpu_call_size, fixed_batch, run_in_calls, signature_error
from facegraph.models.geometry import Letterbox, letterbox, weighted_nms
from facegraph.models.tiled import Found, TiledDetector

# MediaPipe's anchor layouts (SsdAnchorsCalculator options), by input size and anchor count:
# one entry per feature map, (stride, anchors per cell).
ANCHOR_LAYOUTS: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {
    (192, 2304): ((4, 1),),  # full range: 48 x 48 cells
    (128, 896): ((8, 2), (16, 6)),  # short range / front camera
    (256, 896): ((16, 2), (32, 6)),  # back camera
}
# Keypoints in the model's order are the subject's right eye, left eye, nose tip, mouth centre,
# right and left ear tragion: in a picture (not mirrored) the subject's right is the image's left.
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_center", "left_ear", "right_ear")
SCORE_CLIP = 100.0


class BlazeFaceSettings(FamilySettings):
    """Thresholds, and when and how much to tile.

    Defaults chosen by ``facegraph bench-detectors`` (README, "Detectors"): the cheapest
    setting that finds every face MTCNN finds on the marked photos, framed in larger
    pictures too, without a false detection. MediaPipe's own threshold, 0.5, missed an
    aligned 112 px face crop; whole pictures alone miss faces under about 7 % of the
    picture's longer side, 2 x 2 tiles under about 5 %.
    """

    score_threshold: float = Field(0.4, ge=0.0, le=1.0)
    nms_iou: float = Field(0.3, gt=0.0, le=1.0)
    max_faces: int = Field(100, ge=1)
    # Also run pictures whose longer side exceeds this many pixels as tiles (None: never tile).
    tile_above: int | None = Field(1280, ge=1)
    tiles: int = Field(3, ge=2, le=4)
    tile_fraction: float = Field(0.625, gt=0.0, lt=1.0)
    # How the picture is shrunk to the model's input: area averaging, or bilinear as MediaPipe's GPU path.
    interpolation: Literal["area", "linear"] = "area"


@lru_cache(maxsize=8)
def anchors(size: int, count: int) -> np.ndarray:
    """(count, 2) anchor centres in input pixels, in the model's output order."""
    layout = ANCHOR_LAYOUTS[(size, count)]
    centres = []
    for stride, per_cell in layout:
        cells = size // stride
        ys, xs = np.mgrid[:cells, :cells]
        grid = (np.stack([xs, ys], axis=-1).reshape(-1, 2) + 0.5) * stride
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFace(TiledDetector):
    """One input (N, 3, S, S) or (N, S, S, 3); outputs regressors (N, A, 16) and scores (N, A, 1)."""

    family = "blazeface"
    Settings = BlazeFaceSettings
    landmarks = KEYPOINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected_in = [TensorSig(4, (None, 3, None, None), "input")]
        expected_out = [TensorSig(3, (None, None, 16), "regressors"), TensorSig(3, (None, None, 1), "classificators")]
        shape = list(inputs[0].shape or []) if len(inputs) == 1 else []
        self.channels_last = len(shape) == 4 and shape[3] == 3 and shape[1] != 3
        side = shape[1:3] if self.channels_last else shape[2:4]
        by_last = {(o.shape or [None])[-1]: i for i, o in enumerate(outputs) if len(o.shape or []) == 3}
        count = (outputs[by_last[16]].shape or [None, None])[1] if 16 in by_last else None
        known = len(side) == 2 and side[0] == side[1] and (side[0], count) in ANCHOR_LAYOUTS
        if len(outputs) != 2 or set(by_last) != {16, 1} or not known:
            layouts = ", ".join(f"{s}x{s} input with {n} anchors" for s, n in ANCHOR_LAYOUTS)
            raise signature_error(self.family, expected_in, expected_out, self.session, f"expected one of: {layouts}")
        self.size, self.count = int(side[0]), int(count)
        self.box_output, self.score_output = by_last[16], by_last[1]
        self.input_name = inputs[0].name
        self.fixed_one = fixed_batch(self.session)
        self.anchors = anchors(self.size, self.count)
        self.call_size = cpu_call_size(self.session)

    @staticmethod
    def letterboxed(windows: Sequence[np.ndarray], size: int, interpolation: str) -> tuple[np.ndarray, list[Letterbox]]:
        """(N, 3, size, size) float32: each window letterboxed, centred on black, pixels in [-1, 1]."""
        batch = np.empty((len(windows), 3, size, size), np.float32)
        boxes = []
        interp = cv2.INTER_AREA if interpolation == "area" else cv2.INTER_LINEAR
        for i, window in enumerate(windows):
            canvas, box = letterbox(window, size, size, pad_value=0, interpolation=interp)
            batch[i] = canvas.transpose(2, 0, 1)
            boxes.append(box)
        batch *= 1 / 127.5
        batch -= 1.0
        return batch, boxes

    def preprocess(self, windows: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """The model's input batch, in its layout, and each window's letterbox."""
        batch, boxes = self.letterboxed(windows, self.size, self.settings.interpolation)
        return (np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if self.channels_last else batch), boxes

    def decode(self, regressors: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One window's candidates above the threshold: boxes (N, 4) in input pixels, scores (N,), points (N, 6, 2)."""
        # float64: exp(100) overflows float32.
        probability = 1 / (1 + np.exp(-np.clip(scores[:, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
        keep = np.flatnonzero(probability >= self.settings.score_threshold)
        raw, centres = regressors[keep], self.anchors[keep]
        centre, half = raw[:, 0:2] + centres, raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None, :]
        valid = (half > 0).all(axis=1)
        return boxes[valid], probability[keep][valid].astype(np.float32), points[valid]

    def detect_windows(self, crops: Sequence[np.ndarray]) -> list[Found]:
        batch, boxes = self.preprocess(crops)
        outputs = run_in_calls(self.session, self.input_name, batch, self.fixed_one, self.call_size)
        regressors, scores = outputs[self.box_output], outputs[self.score_output]
        found = []
        for k, (crop, box) in enumerate(zip(crops, boxes)):
            # Each window's own MediaPipe result first; the windows' faces are merged after.
            b, p, pts = weighted_nms(*self.decode(regressors[k], scores[k]), self.settings.nms_iou)
            found.append((box.boxes_to_original(b, crop.shape[1], crop.shape[0], clip=False), p, box.points_to_original(pts)))
        return found

    def merge(self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray) -> Found:
        return weighted_nms(boxes, scores, points, self.settings.nms_iou)
