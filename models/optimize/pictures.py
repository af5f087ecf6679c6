"""The pictures variants are measured and calibrated on (scikit-image's, moved about)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np


logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Picture:
    """An RGB uint8 (H, W, 3) picture; ``identity`` names the person when known (for pair labels)."""

    name: str
    image: np.ndarray = field(repr=False)
    identity: str | None


@lru_cache(maxsize=None)
def _skimage(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    image.setflags(write=False)
    return image


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """``lfw_subset``'s 100 faces (25x25 grey), enlarged to 100 px on a 160 px RGB canvas so MTCNN finds them."""
    from skimage import data

    grey = (data.lfw_subset()[:100] * 255.0).round().clip(0, 255).astype(np.uint8)
    out = []
    for face in grey:
        big = np.pad(cv2.resize(face, (100, 100), interpolation=cv2.INTER_CUBIC), 30, mode="edge")
        out.append(np.repeat(big[:, :, None], 3, axis=2))
    faces = np.stack(out)
    faces.setflags(write=False)
    return faces


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def moved_about(image: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One picture moved about: name -> (RGB picture, 2x3 affine map from original to new pixels).

    Shifted onto a larger canvas, scaled 0.7 and 1.4, rotated +-8 degrees, and JPEG quality 40:
    what the optimizer's decisions and the recognizer tests are measured on.
    """
    height, width = image.shape[:2]
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = {"original": (image, identity)}
    shift = np.array([[1.0, 0, 61], [0, 1.0, 37]])
    out["shifted"] = (cv2.warpAffine(image, shift, (width + 90, height + 50), borderValue=(90, 90, 90)), shift)
    for scale in (0.7, 1.4):
        size = (round(width * scale), round(height * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out[f"scaled_{scale}"] = (cv2.resize(image, size, interpolation=interp), np.array([[size[0] / width, 0, 0], [0, size[1] / height, 0]]))
    for angle in (8, -8):
        out[f"rotated_{angle:+d}"] = (_rotate(image, angle), cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0))
    out["jpeg_40"] = (_jpeg(image, 40), identity)
    return out


def measurement_pictures() -> list[Picture]:
    """What variants are compared on: the astronaut moved about (one person), the camera man,
    20 ``lfw_subset`` faces not used for calibration, and a picture without a face."""
    moved = moved_about(_skimage("astronaut"))
    pictures = [Picture("astronaut" if name == "original" else f"astronaut_{name}", image, "astronaut") for name, (image, _) in moved.items()]
    pictures.append(Picture("camera", _skimage("camera"), "camera"))
    pictures += [Picture(f"lfw_{i}", face, None) for i, face in enumerate(_lfw_faces()[80:100], start=80)]
    pictures.append(Picture("coffee", _skimage("coffee"), None))
    return pictures


_AUGMENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "plain": lambda im: im,
    "flip": lambda im: np.ascontiguousarray(im[:, ::-1]),
    "dark": lambda im: (im.astype(np.float32) * 0.7).astype(np.uint8),
    "bright": lambda im: np.clip(im.astype(np.float32) * 1.25 + 10, 0, 255).astype(np.uint8),
    "rotated_+10": lambda im: _rotate(im, 10),
    "rotated_-10": lambda im: _rotate(im, -10),
}


def calibration_pictures() -> list[Picture]:
    """What static int8 is calibrated on: astronaut and camera man under every augmentation,
    and ``lfw_subset`` faces 0-59 under one augmentation each (none of the measured faces)."""
    pictures = []
    for name in ("astronaut", "camera"):
        pictures += [Picture(f"{name}_{aug}", fn(_skimage(name)), name) for aug, fn in _AUGMENTATIONS.items()]
    names = list(_AUGMENTATIONS)
    for i, face in enumerate(_lfw_faces()[:60]):
        aug = names[i % len(names)]
        pictures.append(Picture(f"lfw_{i}_{aug}", _AUGMENTATIONS[aug](face), None))
    return pictures


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list."""
    if limit is None or len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]
