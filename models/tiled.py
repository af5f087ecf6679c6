"""Detectors that see a picture whole and, past a size, also as overlapping tiles of the same input.

A detector with a fixed input loses small faces in large pictures. Running the picture's tiles
too, each fitted into the same input so that a batch keeps one shape, keeps them at a bounded
cost. Each window's faces are found on their own and moved into the picture's pixels; a tile's
face cut by an inner tile edge is dropped (its whole copy is in the picture or a neighbouring
tile); the family's own suppression merges the faces several windows saw.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from facegraph.models.base import Detector
from facegraph.models.errors import ImageError
from facegraph.models.geometry import cut_by_inner_edge, tile_windows
from facegraph.models.types import Face

Window = tuple[int, int, int, int]
# One window's or picture's faces: boxes (N, 4) x1y1x2y2, scores (N,), landmarks (N, K, 2), best first.
Found = tuple[np.ndarray, np.ndarray, np.ndarray]


class TiledDetector(Detector):
    """A family whose settings carry ``tile_above``, ``tiles``, ``tile_fraction`` and ``max_faces``."""

    # A tile's face that comes within this share of its own size of an inner tile edge is taken as
    # cut by it (detectors frame the visible part of a cut face, so the box need not touch the edge).
    edge_margin: ClassVar[float] = 0.2

    def windows(self, image: np.ndarray) -> list[Window]:
        """The whole picture, and past ``tile_above`` its tiles: (x1, y1, x2, y2) in its pixels.

        Each tile is fitted to the model's input from the original pixels. Cutting BlazeFace's
        tiles from one shrunk copy of the picture was 25 % faster on 1920 px pictures, but moved
        them by a fraction of a model pixel, and a hand and a shoulder on the framed group photos
        then scored as faces.
        """
        height, width = image.shape[:2]
        s = self.settings
        if s.tile_above is not None and max(height, width) > s.tile_above:
            return tile_windows(width, height, s.tiles, s.tile_fraction)
        return [(0, 0, width, height)]

    @abstractmethod
    def detect_windows(self, crops: Sequence[np.ndarray]) -> list[Found]:
        """Each window's faces in its own pixels, suppressed within it, not clipped."""

    @abstractmethod
    def merge(self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray) -> Found:
        """The faces of several windows of one picture, the same face seen twice made one, best first."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        images = [np.asarray(image) for image in images]
        owners, windows, crops = [], [], []
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ImageError(f"picture {i}: expected an RGB (H, W, 3) array, got shape {image.shape}")
            for x1, y1, x2, y2 in self.windows(image):
                owners.append(i)
                windows.append((x1, y1, x2, y2))
                crops.append(image[y1:y2, x1:x2])
        found: list[list[Found]] = [[] for _ in images]
        for owner, window, (boxes, scores, points) in zip(owners, windows, self.detect_windows(crops)):
            shift = np.array(window[:2], np.float32)
            boxes, points = boxes + np.tile(shift, 2), points + shift
            height, width = images[owner].shape[:2]
            if window != (0, 0, width, height):
                cut = cut_by_inner_edge(boxes, window, width, height, self.edge_margin)
                boxes, scores, points = boxes[~cut], scores[~cut], points[~cut]
            found[owner].append((boxes, scores, points))
        return [self._faces(parts, image.shape[1], image.shape[0]) for parts, image in zip(found, images)]

    def _faces(self, parts: list[Found], width: int, height: int) -> list[Face]:
        boxes = np.concatenate([b for b, _, _ in parts])
        scores = np.concatenate([p for _, p, _ in parts])
        points = np.concatenate([pts for _, _, pts in parts])
        if len(parts) > 1:
            boxes, scores, points = self.merge(boxes, scores, points)
        faces = []
        for box, score, pts in zip(boxes[: self.settings.max_faces], scores, points):
            x1, x2 = np.clip(box[[0, 2]], 0, width)
            y1, y2 = np.clip(box[[1, 3]], 0, height)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            faces.append(Face(bbox=(float(x1), float(y1), float(x2), float(y2)), score=float(score), landmarks=pts.astype(np.float32), points=self.landmarks))
        return faces
