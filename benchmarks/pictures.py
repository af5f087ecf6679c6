"""Benchmark pictures composed in code from real faces that ship with scikit-image.

Two faces come with the package: the astronaut (frontal, colour) and the cameraman
(three-quarter, grey). Each picture is a background (another scikit-image photo or
texture, scaled up to cover the frame) with 0, 1, 3 or 8 of those heads pasted on it,
scaled, mirrored and re-lit, through a feathered elliptical mask so that no hard
rectangle edge is left for a detector to latch on to. Sizes run from 640 to 1920 px.

Fixture detectors (``square-*``) find bright squares, not faces: for them the same
layouts carry white squares on a darkened background instead (``style="squares"``).
Beside them, the marked real photos (:mod:`benchmarks.photos`) join the mix as they
are (``style="photo"``) when their folder is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Sequence

import cv2
import numpy as np

from facegraph.models.imaging import decode_image, encode_jpeg

Style = Literal["faces", "squares", "photo"]
FACE_COUNTS = (0, 1, 3, 8)
WIDTHS = (640, 960, 1280, 1920)
# Head patches: (source, patch x1, y1, x2, y2, face box inside the source x1, y1, x2, y2).
# The astronaut's face is about x 182-265, y 64-171; the cameraman's about x 165-262, y 70-196.
_HEADS = (
    ("astronaut", (130, 14, 318, 226), (182, 64, 265, 171)),
    ("camera", (120, 28, 306, 236), (165, 70, 262, 196)),
)
_BACKGROUNDS = ("coffee", "rocket", "moon", "hubble_deep_field", "brick", "grass", "gravel", "coins")
_MIN_FACE_PX = 56  # face box height in the picture


@dataclass(frozen=True)
class Picture:
    """One benchmark picture.

    Attributes:
        name: stable id, e.g. ``"p03-3f-1280x720"``.
        jpeg: the encoded picture (JPEG quality 90; a photo's own JPEG file).
        width, height: pixels.
        faces: how many faces (or squares) were pasted.
        boxes: where they are, (x1, y1, x2, y2) picture pixels, one per pasted face.
        style: ``"faces"``, ``"squares"`` or ``"photo"``.
    """

    name: str
    jpeg: bytes
    width: int
    height: int
    faces: int
    boxes: tuple[tuple[int, int, int, int], ...]
    style: Style

    def rgb(self) -> np.ndarray:
        return decode_image(self.jpeg)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray:
    from skimage import data

    return _rgb(getattr(data, name)())


def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``image`` up (or down) to cover width x height, centre-cropped."""
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))), interpolation=cv2.INTER_CUBIC)
    y0 = (resized.shape[0] - height) // 2
    x0 = (resized.shape[1] - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width].copy()


def _feathered_ellipse(width: int, height: int) -> np.ndarray:
    """(H, W) float32 alpha: 1 inside an inscribed ellipse, fading to 0 at the patch edge."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dist = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
    return np.clip((1.0 - dist) / 0.25, 0.0, 1.0).astype(np.float32)


def _layout(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping cells, one per face: (x, y, cell width, cell height)."""
    if count == 0:
        return []
    cols = {1: 1, 3: 3, 8: 4}.get(count, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / cols))
    cell_w, cell_h = width // cols, height // rows
    cells = [(c * cell_w, r * cell_h, cell_w, cell_h) for r in range(rows) for c in range(cols)]
    picked = rng.choice(len(cells), size=count, replace=False)
    return [cells[i] for i in sorted(picked)]


def _head_patch(head: int, mirror: bool, gain: float, bias: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One head's patch (float32, re-lit and maybe mirrored) and the face box inside it."""
    source_name, patch_box, face_box = _HEADS[head]
    px1, py1, px2, py2 = patch_box
    patch = _source(source_name)[py1:py2, px1:px2].astype(np.float32)
    fx1, fy1, fx2, fy2 = (face_box[0] - px1, face_box[1] - py1, face_box[2] - px1, face_box[3] - py1)
    if mirror:  # the face box mirrors with it
        patch = patch[:, ::-1]
        fx1, fx2 = patch.shape[1] - fx2, patch.shape[1] - fx1
    return np.clip(patch * gain + bias, 0, 255), (fx1, fy1, fx2, fy2)


def _scaled_size(patch: np.ndarray, scale: float) -> tuple[int, int]:
    return max(8, round(patch.shape[1] * scale)), max(8, round(patch.shape[0] * scale))


def _blend_head(canvas: np.ndarray, patch: np.ndarray, face, scale: float, ox: int, oy: int) -> tuple[int, int, int, int]:
    """Paste the patch scaled at (ox, oy) through a feathered ellipse; the face's box in the picture."""
    pw, ph = _scaled_size(patch, scale)
    patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    alpha = _feathered_ellipse(pw, ph)[:, :, None]
    region = canvas[oy : oy + ph, ox : ox + pw].astype(np.float32)
    canvas[oy : oy + ph, ox : ox + pw] = np.clip(alpha * patch + (1 - alpha) * region, 0, 255).astype(np.uint8)
    fx1, fy1, fx2, fy2 = face
    return ox + round(fx1 * scale), oy + round(fy1 * scale), ox + round(fx2 * scale), oy + round(fy2 * scale)


def _paste_head(canvas: np.ndarray, rng: np.random.Generator, cell: tuple[int, int, int, int], head: int) -> tuple[int, int, int, int]:
    mirror = rng.random() < 0.5
    patch, face = _head_patch(head, mirror, rng.uniform(0.85, 1.15), rng.uniform(-12, 12))
    x, y, cell_w, cell_h = cell
    # Fill 55-90 % of the cell, but never below the smallest face we ask the detector to find.
    fit = min(cell_w / patch.shape[1], cell_h / patch.shape[0])
    scale = max(fit * rng.uniform(0.55, 0.9), _MIN_FACE_PX / (face[3] - face[1]))
    scale = min(scale, fit)
    pw, ph = _scaled_size(patch, scale)
    ox = x + int(rng.integers(0, max(1, cell_w - pw + 1)))
    oy = y + int(rng.integers(0, max(1, cell_h - ph + 1)))
    return _blend_head(canvas, patch, face, scale, ox, oy)


def _paste_square(canvas: np.ndarray, rng: np.random.Generator, cell: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, cell_w, cell_h = cell
    short = min(cell_w, cell_h)
    side = int(np.clip(short * rng.uniform(0.35, 0.6), 48, short - 8))
    ox = x + int(rng.integers(4, max(5, cell_w - side - 3)))
    oy = y + int(rng.integers(4, max(5, cell_h - side - 3)))
    canvas[oy : oy + side, ox : ox + side] = 255
    return ox, oy, ox + side, oy + side


def compose(index: int, faces: int, width: int, height: int, style: Style = "faces", seed: int = 0) -> Picture:
    """One picture with ``faces`` heads (or squares) on a scaled-up background."""
    rng = np.random.default_rng([seed, index])
    canvas = _cover(_source(_BACKGROUNDS[index % len(_BACKGROUNDS)]), width, height)
    if style == "squares":
        # Fixture detectors need a background well below their brightness threshold.
        canvas = (20 + canvas.astype(np.float32) * (110 / 255)).astype(np.uint8)
    boxes = []
    for k, cell in enumerate(_layout(rng, width, height, faces)):
        boxes.append(_paste_head(canvas, rng, cell, (index + k) % len(_HEADS)) if style == "faces" else _paste_square(canvas, rng, cell))
    return Picture(
        name=f"p{index:02d}-{faces}f-{width}x{height}",
        jpeg=encode_jpeg(canvas, 90),
        width=width,
        height=height,
        faces=faces,
        boxes=tuple(boxes),
        style=style,
    )


def picture_mix(count: int = 16, style: Style = "faces", seed: int = 0) -> list[Picture]:
    """``count`` pictures cycling through 0/1/3/8 faces and 640-1920 px widths (16:9 and 4:3)."""
    pictures = []
    for i in range(count):
        faces = FACE_COUNTS[i % len(FACE_COUNTS)]
        width = WIDTHS[(i // len(FACE_COUNTS) + i) % len(WIDTHS)]
        height = width * 9 // 16 if (i // 2) % 2 == 0 else width * 3 // 4
        pictures.append(compose(i, faces, width, height, style, seed))
    return pictures


# A 720p video frame of a few people at a normal distance: the astronaut's face pasted at these widths (px).
COMPOSITE_FACE_WIDTHS = (58, 83, 133)


def composite_720p() -> Picture:
    """1280 x 720: the astronaut's head three times, faces 58, 83 and 133 px wide, on a wall, in a row."""
    canvas = _cover(_source("brick"), 1280, 720)
    patch, face = _head_patch(0, mirror=False, gain=1.0, bias=0.0)
    boxes = []
    for k, width in enumerate(COMPOSITE_FACE_WIDTHS):
        scale = width / (face[2] - face[0])
        pw, ph = _scaled_size(patch, scale)
        boxes.append(_blend_head(canvas, patch, face, scale, 120 + 400 * k, 560 - ph))
    return Picture("composite-1280x720", encode_jpeg(canvas, 90), 1280, 720, len(boxes), tuple(boxes), "faces")


def astronaut_crowd(rows: int = 10, cols: int = 10) -> Picture:
    """scikit-image's astronaut tiled ``rows`` x ``cols`` (5120 x 5120 for 10 x 10): one face per tile, 83 px wide."""
    tile = _source("astronaut")
    height, width = tile.shape[:2]
    x1, y1, x2, y2 = _HEADS[0][2]
    boxes = tuple((x1 + c * width, y1 + r * height, x2 + c * width, y2 + r * height) for r in range(rows) for c in range(cols))
    canvas = np.ascontiguousarray(np.tile(tile, (rows, cols, 1)))
    name = f"astronaut-crowd-{cols * width}x{rows * height}"
    return Picture(name, encode_jpeg(canvas, 90), cols * width, rows * height, len(boxes), boxes, "faces")


def photo_pictures(folder=None) -> list[Picture]:
    """The marked JPEG photos found in ``folder`` (default ``../shared/photos``), as benchmark pictures."""
    from facegraph.benchmarks.photos import load_photos

    out = []
    for photo in load_photos(folder)[0]:
        if not photo.data.startswith(b"\xff\xd8"):
            continue  # the 112 px aligned crop (PNG) is a model input, not a picture to analyse
        image = photo.rgb()
        boxes = tuple(tuple(round(v) for v in box) for box in photo.faces)
        out.append(Picture(photo.name, photo.data, image.shape[1], image.shape[0], len(boxes), boxes, "photo"))
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Verification:
    """How the detector did on one picture: counts, and intended faces it found (IoU >= 0.3)."""

    name: str
    intended: int
    found: int
    recalled: int

    @property
    def matches(self) -> bool:
        return self.found == self.intended


def verify(detector, pictures: Sequence[Picture]) -> list[Verification]:
    """Run a detector adapter over the pictures and compare with what was pasted."""
    out = []
    for picture in pictures:
        (faces,) = detector.detect([picture.rgb()])
        recalled = sum(1 for box in picture.boxes if any(_iou(box, f.bbox) >= 0.3 for f in faces))
        out.append(Verification(picture.name, picture.faces, len(faces), recalled))
    return out


def style_for(detector_spec) -> Style:
    """Squares for the generated ``square-*`` fixture detectors, faces for real models."""
    fixture = getattr(detector_spec, "fixture", None) or ""
    return "squares" if fixture.startswith("square") else "faces"
