"""BlazeFace test helpers: the pinned wheel's models converted in the test session, and reproducible inputs.

The reference script (``tests/reference/make_blazeface_reference.py``) and the tests
build the network inputs with the functions here. The data file keeps the seeds of
the noise inputs and the letterboxed pictures (``input_pictures``) as the reference
saw them, so the parity tests do not depend on OpenCV's resize of the day.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facegraph.models.blazeface import BlazeFace
from facegraph.models.geometry import letterbox
from facegraph.models.pack.blazeface_weights import MODELS, convert_blazeface
from facegraph.models.runtime import RuntimeOptions, create_session
from tests.pack import source_distribution

REFERENCE_FILE = Path(__file__).parent / "data" / "blazeface_reference.npz"
SIZES = {"full_range": 192, "short_range": 128, "back": 256}
SEEDS = (401, 402)


def pictures() -> dict[str, np.ndarray]:
    """The scikit-image faces alone and side by side (two faces: NMS must keep both)."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, :3])
    camera = np.repeat(data.camera()[:, :, None], 3, axis=2)
    return {"astronaut": astronaut, "camera": camera, "pair": np.concatenate([astronaut, camera], axis=1)}


def input_pictures() -> dict[str, np.ndarray]:
    """(1, size, size, 3) uint8 by ``<model>__<picture>``: each picture letterboxed on black by OpenCV's area resize, as the adapter does."""
    return {
        f"{model}__{name}": letterbox(picture, size, size, pad_value=0, interpolation=cv2.INTER_AREA)[0][None]
        for model, size in SIZES.items()
        for name, picture in pictures().items()
    }


def network_inputs(model: str, canvases: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """NHWC float32 inputs for one model: seeded noise in [-1, 1], then the letterboxed pictures (default: letterboxed now).

    The canvases already have the model's size, so the adapter's own ``letterboxed`` only scales their pixels.
    """
    size = SIZES[model]
    canvases = input_pictures() if canvases is None else canvases
    out = {f"seed{seed}": np.random.default_rng(seed).uniform(-1, 1, (1, size, size, 3)).astype(np.float32) for seed in SEEDS}
    for name in pictures():
        batch, _ = BlazeFace.letterboxed(list(canvases[f"{model}__{name}"]), size, "area")
        out[name] = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    return out


@pytest.fixture(scope="session")
def blazeface_models():
    """Every BlazeFace model of the wheel as ONNX (onnx.ModelProto), keyed as MODELS."""
    wheel = source_distribution("blazeface")
    return {name: convert_blazeface(wheel, name) for name in MODELS}


@pytest.fixture(scope="session")
def blazeface_sessions(blazeface_models):
    return {
        name: create_session(model.SerializeToString(), RuntimeOptions(device="cpu", cpu_threads=2))[0]
        for name, model in blazeface_models.items()
    }
