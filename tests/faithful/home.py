"""The faithful files the home-project references were recorded on, and the pictures they saw."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from tests.faithful.insightface import arcface, scrfd

PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "photos"
PHOTO_NAMES = ("group-t1.jpg", "multiface.jpg", "angelina_jolie.jpg", "kate_siegel.jpg", "paul_rudd.jpg", "tom-hanks.png")

# SCRFD as insightface publishes it (det_10g: unbatched, numbered outputs, dynamic size) and its other layouts.
DETECTORS = {
    "det_10g": scrfd,
    "batched_named": partial(scrfd, batched=True, names="roles"),
    "five_level_fixed": partial(scrfd, levels=5, size=(512, 384)),
    "five_level_no_kps": partial(scrfd, levels=5, landmarks=False),
    "no_kps": partial(scrfd, landmarks=False),
}
# The same files with their outputs in another order: the answers must not change.
SHUFFLED = {
    "det_10g": partial(scrfd, order="shuffled"),
    "batched_named": partial(scrfd, batched=True, names="roles", order="shuffled"),
}
RECOGNIZERS = {
    "w600k_r50": arcface,
    "glintr100_mxnet": partial(arcface, mxnet=True),
    "arcface_128": partial(arcface, size=128),
}


def reference_pictures(require_photos: bool = False) -> dict[str, np.ndarray]:
    """BGR pictures by name: the astronaut, then the shared photos when the folder is there."""
    from skimage import data

    pictures = {"astronaut": np.ascontiguousarray(data.astronaut()[..., ::-1])}
    if PHOTOS.is_dir() or require_photos:
        for name in PHOTO_NAMES:
            bgr = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(PHOTOS / name)
            pictures[Path(name).stem] = bgr
    return pictures
