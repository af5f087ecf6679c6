"""Shared geometry: letterbox, NMS, similarity alignment and face crops (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facegraph.models.errors import MisfitError
from facegraph.models.types import CropSpec, Face

# insightface's 5-point ArcFace template for a 112x112 crop (eyes, nose, mouth corners).
ARCFACE_TEMPLATE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


@dataclass(frozen=True)
class Letterbox:
    """Mapping from original pixels to a padded, uniformly scaled model input."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def boxes_to_original(self, boxes: np.ndarray, width: int, height: int, clip: bool = True) -> np.ndarray:
        """(N, 4) x1y1x2y2 in model pixels -> original pixels, clipped to the image unless ``clip`` is false."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale_y
        if clip:
            out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
            out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out

    def points_to_original(self, points: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
        """(..., 2) points in model pixels -> original pixels, clipped to ``width`` x ``height`` when given."""
        out = points.astype(np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale_x
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale_y
        if width is not None and height is not None:
            out[..., 0] = out[..., 0].clip(0, width)
            out[..., 1] = out[..., 1].clip(0, height)
        return out


def letterbox(
    image: np.ndarray, width: int, height: int, pad_value: int = 114, interpolation: int | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio into a ``height`` x ``width`` canvas, centred.

    ``interpolation``: an OpenCV flag; None shrinks by area averaging and enlarges bilinearly.
    """
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = interpolation if interpolation is not None else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp) if (new_w, new_h) != (w, h) else image
    canvas = np.full((height, width, image.shape[2]), pad_value, dtype=image.dtype)
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    # Rounding makes the effective scale differ per axis (a lot for a 1-pixel-wide image).
    return canvas, Letterbox(scale_x=new_w / w, scale_y=new_h / h, pad_x=float(pad_x), pad_y=float(pad_y))


def top_left_letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """insightface's SCRFD letterbox: bilinear resize, sizes truncated, zero padding right and bottom.

    One scale for both axes (the new height over the old), as ``SCRFD.detect`` divides by.
    """
    h, w = image.shape[:2]
    im_ratio = float(h) / w
    if im_ratio > float(height) / width:
        new_h, new_w = height, int(height / im_ratio)
    else:
        new_w, new_h = width, int(width * im_ratio)
    new_w, new_h = max(new_w, 1), max(new_h, 1)  # insightface fails on a picture this thin; we answer
    scale = float(new_h) / h
    canvas = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, Letterbox(scale_x=scale, scale_y=scale, pad_x=0.0, pad_y=0.0)


def ultralytics_letterbox(image: np.ndarray, width: int, height: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Ultralytics' ``LetterBox`` (centred, bilinear, grey 114) and the mapping its ``scale_boxes`` inverts.

    One gain for both sides, sizes rounded (Python's round), padding ``round(d / 2 - 0.1)`` on
    the top and left; mapping back divides each axis by its own rounded size over the original.
    """
    h, w = image.shape[:2]
    gain = min(height / h, width / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image
    top, left = round((height - new_h) / 2 - 0.1), round((width - new_w) / 2 - 0.1)
    canvas = np.full((height, width, image.shape[2]), pad_value, dtype=image.dtype)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, Letterbox(scale_x=new_w / w, scale_y=new_h / h, pad_x=float(left), pad_y=float(top))


def stretch(image: np.ndarray, width: int, height: int, interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, Letterbox]:
    """Resize to exactly ``width`` x ``height``, each axis scaled on its own (no padding), and the mapping back.

    What ``cv2.dnn.blobFromImage(image, size=(width, height))`` feeds a network.
    """
    h, w = image.shape[:2]
    resized = cv2.resize(image, (width, height), interpolation=interpolation) if (width, height) != (w, h) else image
    return resized, Letterbox(scale_x=width / w, scale_y=height / h, pad_x=0.0, pad_y=0.0)


def round_up(value: float, divisor: int) -> int:
    """The smallest multiple of ``divisor`` at or above ``value`` (at least ``divisor``)."""
    return max(divisor, int(np.ceil(value / divisor)) * divisor)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between (N, 4) and (M, 4) x1y1x2y2 boxes -> (N, M)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    Args:
        boxes: (N, 4) x1y1x2y2.
        scores: (N,).
        mode: ``union`` (IoU, run by OpenCV's ``NMSBoxes``), ``union+1`` (insightface's: IoU
            with sides counted as ``x2 - x1 + 1``, equal scores ordered as numpy's default
            argsort reversed) or ``min`` (intersection over the smaller box, as MTCNN's last stage uses).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not len(boxes):
        return np.zeros(0, np.int64)
    if mode == "union":
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
        # NMSBoxes wants scores above a non-negative threshold: hand it ranks in (0, 1] instead,
        # best first, ties in index order (as a stable sort of the scores gives).
        ranks = np.empty(len(scores), np.float64)
        ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores), 0, -1) / len(scores)
        keep = cv2.dnn.NMSBoxes(xywh, ranks, 0.0, float(iou_threshold))
        return np.asarray(keep, np.int64).reshape(-1)
    order = scores.argsort()[::-1] if mode == "union+1" else np.argsort(-scores, kind="stable")
    one = 1.0 if mode == "union+1" else 0.0
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    if mode == "min":
        areas = areas.clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (x2 - x1 + one).clip(0) * (y2 - y1 + one).clip(0)
        if mode == "min":
            overlap = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-9)
        else:
            overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(groups: np.ndarray, boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, mode: str = "union") -> np.ndarray:
    """NMS run separately within each group (e.g. picture) in one call: kept indices.

    Each group's boxes are shifted to a region of their own, far from every other
    group's, so no box of one group can overlap a box of another.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, np.int64)
    span = float(np.abs(boxes).max()) * 2 + 1
    offsets = np.asarray(groups, np.float32)[:, None] * span
    return nms(boxes + offsets, scores, iou_threshold, mode)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of its cluster.

    The best remaining candidate and every candidate overlapping it by more than
    ``iou_threshold`` form a cluster; the cluster's boxes and landmarks are averaged with
    the scores as weights, and the face keeps the best score. Returns (boxes (M, 4),
    scores (M,), points (M, K, 2) or None), best first.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    boxes, scores = boxes[order], np.asarray(scores, np.float32)[order]
    points = None if points is None else np.asarray(points, np.float32)[order]
    overlaps = iou(boxes, boxes)
    remaining = np.ones(len(boxes), bool)
    out_boxes, out_scores, out_points = [], [], []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        cluster = remaining & (overlaps[i] > iou_threshold)
        cluster[i] = True
        remaining &= ~cluster
        total = float(scores[cluster].sum())
        # Scores of zero (a threshold of 0) would leave no weight: average them evenly.
        weights = scores[cluster] / total if total > 0 else np.full(int(cluster.sum()), 1 / cluster.sum(), np.float32)
        out_boxes.append(weights @ boxes[cluster])
        out_scores.append(scores[i])
        if points is not None:
            out_points.append(np.tensordot(weights, points[cluster], axes=1))
    return (
        np.asarray(out_boxes, np.float32).reshape(-1, 4),
        np.asarray(out_scores, np.float32),
        None if points is None else np.asarray(out_points, np.float32).reshape(-1, *points.shape[1:]),
    )


def tile_windows(width: int, height: int, tiles: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """The whole picture and ``tiles`` x ``tiles`` overlapping windows (x1, y1, x2, y2), evenly spread."""
    tw, th = max(1, round(width * fraction)), max(1, round(height * fraction))
    xs = np.linspace(0, width - tw, tiles).round().astype(int)
    ys = np.linspace(0, height - th, tiles).round().astype(int)
    return [(0, 0, width, height)] + [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]


def cut_by_inner_edge(boxes: np.ndarray, window, width: int, height: int, margin: float) -> np.ndarray:
    """Which of a tile's boxes (picture pixels) come within ``margin`` x their size of a tile edge inside the picture.

    Such a face is cut by the tile; its whole copy is in the picture or a neighbouring tile.
    """
    x1, y1, x2, y2 = window
    mx, my = margin * (boxes[:, 2] - boxes[:, 0]), margin * (boxes[:, 3] - boxes[:, 1])
    cut = np.zeros(len(boxes), bool)
    if x1 > 0:
        cut |= boxes[:, 0] <= x1 + mx
    if y1 > 0:
        cut |= boxes[:, 1] <= y1 + my
    if x2 < width:
        cut |= boxes[:, 2] >= x2 - mx
    if y2 < height:
        cut |= boxes[:, 3] >= y2 - my
    return cut


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama's closed form; returns the 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def square_box(bbox, margin: float) -> tuple[float, float, float, float]:
    """The box grown by ``margin`` x its size on each side and made square about its centre."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def dlib_chip_matrix(landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Chip-to-image matrix as dlib's ``get_face_chip_details`` + ``extract_image_chip`` build it.

    dlib fits chip -> image, centres a rectangle of ``size * scale - 1`` pixels on the
    image of the chip's centre ``size / 2``, and maps the chip's corner pixels onto its
    corners: a slightly different scale and a half-pixel shift from the plain fit.
    """
    fit = estimate_similarity(template, landmarks)
    linear = fit[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    rotation = linear / scale
    centre = linear @ np.array([size / 2, size / 2]) + fit[:, 2]
    k = (size * scale - 1) / (size - 1)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = k * rotation
    matrix[:, 2] = centre - k * rotation @ np.array([(size - 1) / 2, (size - 1) / 2])
    return matrix


def alignment_points(template_points: tuple[str, ...], face_points: tuple[str, ...]) -> list[tuple[int, int]]:
    """Pairs (template row, face row) of the points an alignment fits: every template point the face has.

    Raises MisfitError unless both eyes and at least three points in all are shared: fewer
    cannot fix rotation, scale and position reliably.
    """
    pairs = [(t, face_points.index(name)) for t, name in enumerate(template_points) if name in face_points]
    shared = {template_points[t] for t, _ in pairs}
    if len(pairs) < 3 or not {"left_eye", "right_eye"} <= shared:
        raise MisfitError(
            f"alignment needs both eyes and at least 3 of the points {', '.join(template_points)}; "
            f"the detector gives {', '.join(face_points) or 'none'}"
        )
    return pairs


def crop_face(image: np.ndarray, face: Face, spec: CropSpec) -> np.ndarray:
    """Cut one face out of an RGB image as ``spec`` says; returns (H, W, 3) uint8."""
    width, height = spec.size
    if spec.kind == "landmarks" and face.landmarks is not None and spec.template is not None:
        pairs = alignment_points(spec.points, face.points)
        template = np.asarray(spec.template, np.float64)[[t for t, _ in pairs]]
        landmarks = np.asarray(face.landmarks, np.float64)[[f for _, f in pairs]]
        if spec.convention == "dlib":
            chip_to_image = dlib_chip_matrix(landmarks, template, width)
            return cv2.warpAffine(image, chip_to_image, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        matrix = estimate_similarity(landmarks, template)
    else:
        x1, y1, x2, y2 = square_box(face.bbox, spec.margin)
        sx, sy = width / max(x2 - x1, 1e-6), height / max(y2 - y1, 1e-6)
        matrix = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]])
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def scale_template(template, from_size: tuple[int, int], to_size: tuple[int, int]):
    """A template defined for one crop size, rescaled to another."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return tuple((x * sx, y * sy) for x, y in template)
