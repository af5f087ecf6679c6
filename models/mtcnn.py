"""MTCNN: P-Net over an image pyramid, then R-Net and O-Net over every candidate of the batch at once.

Batched the way a GPU likes it: pictures of a batch whose sizes are close share
a zero-padded canvas, and P-Net runs once per pyramid level for each such group;
R-Net and O-Net each run once over the candidate crops of every picture.

Pictures whose longer side exceeds ``max_side`` are detected on a copy scaled down
to it, and the faces mapped back to original pixels. The glue stays off the
Python level: pyramid levels are resized from the uint8 picture with OpenCV,
R-Net and O-Net crops are sampled by one ``cv2.remap`` per picture, and NMS runs
once per stage over every picture (OpenCV's ``NMSBoxes``).

The arithmetic follows the ``mtcnn`` 1.0.0 package whose weights the default
pack converts (``models/pack/mtcnn_weights.py``), including the 1-based pixel
conventions the weights were trained with (P-Net windows 2x+1 .. 2x+12, offsets
and landmarks in units of size + 1), truncated pyramid sizes, its crop sampling,
boxes squared between stages and "min" overlap for the last NMS. With it the
cascade gives the package's boxes (IoU > 0.999 on the test pictures); only NMS
differs (greedy here, where the package drops a box overlapped by any better
one, even a suppressed one).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from pydantic import Field

from facegraph.models.base import Detector, FamilySettings, TensorSig, check_signature, fixed_batch, run_batched, signature_error
from facegraph.models.errors import ImageError, ModelLoadError
from facegraph.models.geometry import batched_nms
from facegraph.models.types import FIVE_POINTS, Face

CELL, STRIDE = 12, 2  # P-Net sees 12x12 windows every 2 pixels of its input
# Pictures share a P-Net canvas when padding adds at most this share of the canvas.
MAX_PADDING = 0.25
# Cap on batch x height x width of one P-Net call, to bound activation memory.
PNET_MAX_PIXELS = 1 << 23
# cv2.remap refuses sources and outputs of SHRT_MAX pixels or more in either direction.
REMAP_LIMIT = 32766

_PNET_IN = [TensorSig(4, (None, 3, None, None), "input")]
_PNET_OUT = [TensorSig(4, (None, 4, None, None), "bbox_reg"), TensorSig(4, (None, 2, None, None), "prob")]
_RNET_IN = [TensorSig(4, (None, 3, 24, 24), "input")]
_RNET_OUT = [TensorSig(2, (None, 4), "bbox_reg"), TensorSig(2, (None, 2), "prob")]
_ONET_IN = [TensorSig(4, (None, 3, 48, 48), "input")]
_ONET_OUT = [TensorSig(2, (None, 4), "bbox_reg"), TensorSig(2, (None, 10), "landmarks"), TensorSig(2, (None, 2), "prob")]


class MTCNNSettings(FamilySettings):
    """Cascade knobs; defaults are the published MTCNN ones, and ``max_side`` ours.

    A face is returned when O-Net scores it above ``thresholds[2]`` *and* at least
    ``score_threshold`` (the package's own default is 0.8 for O-Net).
    """

    min_face_size: float = Field(20.0, gt=0)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = Field(0.709, gt=0.1, lt=1.0)
    # P-Net within a pyramid level, P-Net across levels, R-Net (IoU); O-Net (overlap of the smaller box).
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    max_faces: int = Field(100, ge=1)
    score_threshold: float = Field(0.7, ge=0.0, le=1.0)
    # Pictures whose longer side exceeds this many pixels are detected on a copy scaled down to it
    # (None: always at full resolution). Faces under about min_face_size x side / max_side original
    # pixels are then not found. Measured (README, "Detectors"): on a 3840 px picture 1920 keeps faces
    # down to 30 px (full resolution: 24) in a quarter of the time; pictures up to 1920 px are untouched.
    max_side: int | None = Field(1920, ge=64, le=REMAP_LIMIT)


def pyramid(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from ``min_face_size`` px up to the picture."""
    scale = CELL / min_face_size
    scales = []
    while min(height, width) * scale >= CELL:
        scales.append(scale)
        scale *= factor
    return scales


def canvases(sizes: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], list[int]]]:
    """Group picture indices under shared (height, width) canvases, largest pictures first.

    Equal sizes always share; a smaller picture joins a canvas that it fills to at
    least ``1 - MAX_PADDING`` of its area.
    """
    groups: list[tuple[tuple[int, int], list[int]]] = []
    for i in sorted(range(len(sizes)), key=lambda k: -sizes[k][0] * sizes[k][1]):
        h, w = sizes[i]
        for (ch, cw), members in groups:
            if h <= ch and w <= cw and h * w >= (1 - MAX_PADDING) * ch * cw:
                members.append(i)
                break
        else:
            groups.append(((h, w), [i]))
    return groups


def square(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1y1x2y2 boxes grown to squares about their centres."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply R-Net/O-Net offsets, which are fractions of (size + 1) as the weights were trained."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 (x - 127.5) / 128, as the weights were trained."""
    out = pixels.astype(np.float32)
    out -= 127.5
    out *= 1 / 128
    return out


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) normalised bilinear samples of a uint8 (H, W, 3) picture inside each x1y1x2y2 box.

    Samples where the package does (TensorFlow's ``crop_and_resize`` on boxes divided by
    the picture size): the first and last crop pixels sit on the box corners scaled by
    (W - 1) / W and (H - 1) / H, and samples outside the picture read 0 (after
    normalisation). One ``cv2.remap`` call samples every crop of a chunk of boxes.
    """
    height, width = image.shape[:2]
    steps = np.arange(size, dtype=np.float64) / (size - 1)
    b = boxes.astype(np.float64)
    ys = ((b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * steps) * ((height - 1) / height)).astype(np.float32)
    xs = ((b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * steps) * ((width - 1) / width)).astype(np.float32)
    out = np.empty((len(boxes), size, size, 3), np.float32)
    per_call = max(1, REMAP_LIMIT // size)
    for start in range(0, len(boxes), per_call):
        part = slice(start, start + per_call)
        n = len(ys[part])
        map_y = np.repeat(ys[part, :, None], size, axis=2).reshape(n * size, size)
        map_x = np.repeat(xs[part, None, :], size, axis=1).reshape(n * size, size)
        sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[part] = normalise(sampled.reshape(n, size, size, 3))
    inside = ((ys >= 0) & (ys <= height - 1))[:, :, None] & ((xs >= 0) & (xs <= width - 1))[:, None, :]
    out[~inside] = 0.0
    return out


class MTCNNDetector(Detector):
    """Sessions ``pnet`` (N,3,H,W), ``rnet`` (N,3,24,24), ``onet`` (N,3,48,48); inputs RGB, (x - 127.5) / 128."""

    family = "mtcnn"
    files = ("pnet", "rnet", "onet")
    Settings = MTCNNSettings
    landmarks = FIVE_POINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        missing = [name for name in self.files if name not in sessions]
        if missing:
            raise ModelLoadError(f"family '{self.family}' needs sessions {', '.join(self.files)}; missing {', '.join(missing)}")
        check_signature(self.family, sessions["pnet"], _PNET_IN, _PNET_OUT)
        check_signature(self.family, sessions["rnet"], _RNET_IN, _RNET_OUT)
        check_signature(self.family, sessions["onet"], _ONET_IN, _ONET_OUT)
        if any(isinstance(d, int) for d in (sessions["pnet"].get_inputs()[0].shape or [])[2:]):
            raise signature_error(self.family, _PNET_IN, _PNET_OUT, sessions["pnet"], "P-Net needs a dynamic height and width")
        self.input_names = {name: sessions[name].get_inputs()[0].name for name in self.files}
        self.fixed_one = {name: fixed_batch(sessions[name]) for name in self.files}

    def _run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        return run_batched(self.sessions[name], self.input_names[name], batch, self.fixed_one[name])

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """uint8 (H, W, 3) pictures the cascade sees (scaled down past ``max_side``) and their (sx, sy) scales."""
        limit = min(self.settings.max_side or REMAP_LIMIT, REMAP_LIMIT)
        out, scales = [], []
        for i, image in enumerate(images):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ImageError(f"picture {i}: expected an RGB (H, W, 3) array, got shape {image.shape}")
            if image.dtype != np.uint8:
                image = np.clip(image, 0, 255).astype(np.uint8)
            height, width = image.shape[:2]
            scale = limit / max(height, width, 1)
            if scale < 1:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                scales.append((size[0] / width, size[1] / height))
            else:
                scales.append((1.0, 1.0))
            out.append(np.ascontiguousarray(image))
        return out, np.asarray(scales, np.float32).reshape(-1, 2)

    def propose(self, pictures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over every pyramid level: (picture ids, square candidate boxes in picture pixels)."""
        s = self.settings
        ids, boxes, scores = [np.zeros(0, np.int64)], [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)]
        for (height, width), members in canvases([p.shape[:2] for p in pictures]):
            # Every level is resized from the full picture, as the package does (resizing each level
            # from the one before is faster but blurs the small levels: boxes moved by up to 16 % IoU).
            # OpenCV's area averaging is faster on float32 than on uint8 here.
            sources = {i: normalise(pictures[i]) for i in members}
            for scale in pyramid(height, width, s.min_face_size, s.scale_factor):
                level_h, level_w = int(height * scale), int(width * scale)
                per_call = max(1, PNET_MAX_PIXELS // (level_h * level_w))
                for start in range(0, len(members), per_call):
                    found = self._pnet_level(sources, members[start : start + per_call], scale, (level_h, level_w))
                    for acc, part in zip((ids, boxes, scores), found):
                        acc.append(part)
        ids, boxes, scores = np.concatenate(ids), np.concatenate(boxes), np.concatenate(scores)
        keep = batched_nms(ids, boxes, scores, s.nms_thresholds[1])
        return ids[keep], square(boxes[keep])

    def _pnet_level(self, sources: dict[int, np.ndarray], members: list[int], scale: float, level: tuple[int, int]):
        s = self.settings
        batch = np.zeros((len(members), 3, level[0], level[1]), np.float32)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        sizes = []
        for k, i in enumerate(members):
            h, w = sources[i].shape[:2]
            # Sizes truncate, as in the package.
            size = (max(1, int(w * scale)), max(1, int(h * scale)))
            batch[k, :, : size[1], : size[0]] = cv2.resize(sources[i], size, interpolation=interp).transpose(2, 0, 1)
            sizes.append(size)
        reg, prob = self._run("pnet", batch)
        row, y, x = np.nonzero(prob[:, 1] > s.thresholds[0])
        # The weights' 1-based convention: window (2x + 1 .. 2x + 12), offsets in units of its 11 px span.
        left, top = (x * STRIDE + 1).astype(np.float32), (y * STRIDE + 1).astype(np.float32)
        cells = np.stack([left, top, left + CELL - 1, top + CELL - 1], axis=1)
        # Boxes map back by the nominal scale, as in the package.
        boxes = (cells + reg[row, :, y, x] * (CELL - 1)) / scale
        scores = prob[row, 1, y, x]
        ids = np.asarray(members, np.int64)[row]
        # Only windows wholly inside the picture's own part of the canvas: they see exactly
        # what P-Net on the picture alone would see.
        widths, heights = (np.array(v)[row] for v in zip(*sizes))
        inside = (x * STRIDE + CELL <= widths) & (y * STRIDE + CELL <= heights)
        ids, boxes, scores = ids[inside], boxes[inside], scores[inside]
        keep = batched_nms(ids, boxes, scores, s.nms_thresholds[0])
        return ids[keep], boxes[keep].astype(np.float32), scores[keep]

    def _crops(self, pictures: list[np.ndarray], ids: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """NCHW crops of every candidate of every picture, in candidate order."""
        batch = np.empty((len(ids), size, size, 3), np.float32)
        for image_id in np.unique(ids):
            idx = np.flatnonzero(ids == image_id)
            batch[idx] = crops(pictures[image_id], boxes[idx], size)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def refine(self, pictures: list[np.ndarray], ids: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """R-Net over all candidates at once: surviving (ids, square boxes)."""
        s = self.settings
        reg, prob = self._run("rnet", self._crops(pictures, ids, boxes, 24))
        scores = prob[:, 1]
        keep = scores > s.thresholds[1]
        ids, boxes, scores = ids[keep], calibrate(boxes[keep], reg[keep]), scores[keep]
        keep = batched_nms(ids, boxes, scores, s.nms_thresholds[2])
        return ids[keep], square(boxes[keep])

    def output(self, pictures: list[np.ndarray], ids: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
        """O-Net over all candidates at once: (ids, boxes, scores, landmarks (N, 5, 2)) best first per picture."""
        s = self.settings
        reg, marks, prob = self._run("onet", self._crops(pictures, ids, boxes, 48))
        scores = prob[:, 1]
        # Landmarks are fractions of the box O-Net saw, with the weights' 1-based pixel convention.
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        landmarks = np.stack([w * marks[:, 0:5] + boxes[:, 0:1] - 1, h * marks[:, 5:10] + boxes[:, 1:2] - 1], axis=2)
        keep = scores > s.thresholds[2]
        ids, boxes, scores, landmarks = ids[keep], calibrate(boxes[keep], reg[keep]), scores[keep], landmarks[keep]
        keep = batched_nms(ids, boxes, scores, s.nms_thresholds[3], mode="min")
        return ids[keep], boxes[keep], scores[keep], landmarks[keep]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in images]
        pictures, scales = self.preprocess(images)
        ids, boxes = self.propose(pictures)
        if len(ids):
            ids, boxes = self.refine(pictures, ids, boxes)
        if not len(ids):
            return results
        ids, boxes, scores, landmarks = self.output(pictures, ids, boxes)
        # Back to original pixels from the copy the cascade saw.
        sx, sy = scales[ids, 0:1], scales[ids, 1:2]
        boxes = boxes / np.concatenate([sx, sy, sx, sy], axis=1)
        landmarks = landmarks / scales[ids][:, None, :]
        for i in range(len(ids)):
            faces = results[int(ids[i])]
            if scores[i] < self.settings.score_threshold or len(faces) >= self.settings.max_faces:
                continue
            height, width = np.asarray(images[int(ids[i])]).shape[:2]
            x1, x2 = np.clip(boxes[i, [0, 2]], 0, width)
            y1, y2 = np.clip(boxes[i, [1, 3]], 0, height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            faces.append(Face(bbox=(float(x1), float(y1), float(x2), float(y2)), score=float(scores[i]), landmarks=landmarks[i].astype(np.float32)))
        return results
