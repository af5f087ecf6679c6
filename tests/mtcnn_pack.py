"""MTCNN test helpers: the pinned wheel (downloaded once, checked, converted) and reproducible inputs.

The reference script (``tests/reference/make_mtcnn_reference.py``) and the tests
build their network inputs with the functions here. The data file keeps the seeds
of the noise inputs and the pictures that OpenCV computed (``input_pictures``) as
the reference saw them, so the parity tests do not depend on OpenCV's release.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facegraph.models.optimize import moved_about
from facegraph.models.pack.mtcnn_weights import convert_mtcnn
from facegraph.models.runtime import RuntimeOptions, create_session
from tests.pack import source_distribution

REFERENCE_FILE = Path(__file__).parent / "data" / "mtcnn_reference.npz"

# (seed, NCHW shape) of the uniform [-1, 1) inputs each network is compared on.
RANDOM_INPUTS: dict[str, tuple[tuple[int, tuple[int, ...]], ...]] = {
    "pnet": ((101, (2, 3, 12, 12)), (102, (3, 3, 47, 61))),
    "rnet": ((201, (16, 3, 24, 24)),),
    "onet": ((301, (16, 3, 48, 48)),),
}
# The astronaut's face as the package's own pipeline finds it, x1 y1 x2 y2 (the jitter origin below).
ASTRONAUT_FACE = (182.0, 64.0, 265.0, 171.0)
# Square boxes around that face, as fractions of its size: (dx, dy, grow); real pixels for R-Net and O-Net.
CROP_JITTER = ((0.0, 0.0, 1.0), (0.1, -0.05, 1.1), (-0.15, 0.1, 0.9), (0.3, 0.2, 1.3), (0.6, 0.6, 1.0), (-1.2, 0.4, 0.8))
PNET_ASTRONAUT_SCALE = 0.2


def normalise(pictures: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, H, W, 3) -> float32 NCHW (N, 3, H, W) scaled as MTCNN wants."""
    return ((pictures.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)


def random_input(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, :3])


def astronaut_crop_pictures(size: int) -> np.ndarray:
    """(len(CROP_JITTER), size, size, 3) uint8 crops around and beside the astronaut's face."""
    image = astronaut()
    x1, y1, x2, y2 = ASTRONAUT_FACE
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crops = []
    for dx, dy, grow in CROP_JITTER:
        s = side * grow
        left, top = cx + dx * side - s / 2, cy + dy * side - s / 2
        matrix = np.array([[size / s, 0, -left * size / s], [0, size / s, -top * size / s]])
        crops.append(cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(crops)


def astronaut_pnet_picture() -> np.ndarray:
    """(1, h, w, 3) uint8: the astronaut shrunk so that P-Net sees her face at one of its own scales."""
    image = astronaut()
    side = round(image.shape[0] * PNET_ASTRONAUT_SCALE)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)[None]


def lfw_onet_pictures() -> np.ndarray:
    """(200, 48, 48, 3) uint8: ``skimage.data.lfw_subset()`` (grey 25x25) resized for O-Net, grey in all three channels."""
    from skimage import data

    grey = (data.lfw_subset() * 255.0).round().clip(0, 255).astype(np.uint8)
    crops = np.stack([cv2.resize(g, (48, 48), interpolation=cv2.INTER_LINEAR) for g in grey])
    return np.repeat(crops[..., None], 3, axis=3)


def lfw_onet_inputs() -> tuple[np.ndarray, np.ndarray]:
    """O-Net inputs for ``skimage.data.lfw_subset()`` and labels (1 = face)."""
    # The first 100 pictures are faces, the last 100 are not (scikit-image's documentation).
    labels = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    return normalise(lfw_onet_pictures()), labels


def input_pictures() -> dict[str, np.ndarray]:
    """The uint8 pictures behind the inputs that OpenCV computes, keyed ``<net>_<index in network_inputs>``.

    OpenCV's resize and warp move by a few grey levels between releases, so the reference
    file stores these pictures as the reference saw them (``recorded_pictures``).
    """
    return {
        "pnet_2": astronaut_pnet_picture(),
        "rnet_1": astronaut_crop_pictures(24),
        "onet_1": astronaut_crop_pictures(48),
        "onet_2": lfw_onet_pictures(),
    }


def astronaut_variants() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The astronaut moved about: name -> (RGB picture, 2x3 affine map from original to new pixels)."""
    return moved_about(astronaut())


def network_inputs(pictures: dict[str, np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """Every input each network is compared on, in a fixed order: the seeded noise, then ``pictures`` (default: rebuilt now)."""
    pictures = input_pictures() if pictures is None else pictures
    out = {name: [random_input(seed, shape) for seed, shape in cases] for name, cases in RANDOM_INPUTS.items()}
    for key in ("pnet_2", "rnet_1", "onet_1", "onet_2"):
        net, index = key.split("_")
        assert len(out[net]) == int(index), key
        out[net].append(normalise(pictures[key]))
    return out


@pytest.fixture(scope="session")
def mtcnn_models():
    """The three converted ONNX models (onnx.ModelProto) keyed pnet, rnet, onet."""
    return convert_mtcnn(source_distribution("mtcnn"))


@pytest.fixture(scope="session")
def mtcnn_sessions(mtcnn_models):
    return {
        name: create_session(model.SerializeToString(), RuntimeOptions(device="cpu", cpu_threads=2))[0]
        for name, model in mtcnn_models.items()
    }
