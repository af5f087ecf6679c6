"""The per-batch work of each stage, as plain functions over adapters (no Ray).

Serve deployments call these inside ``@serve.batch`` methods; the in-process
baseline of the benchmarks calls the very same functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from facegraph.models.base import Classifier, Detector, Recognizer
from facegraph.models.errors import FacegraphError
from facegraph.models.geometry import crop_face
from facegraph.models.imaging import decode_image
from facegraph.models.types import Classification, CropSpec, Face

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageError:
    """A per-item failure that travels back instead of failing the whole batch."""

    code: str
    message: str

    @classmethod
    def of(cls, exc: FacegraphError) -> "StageError":
        return cls(exc.code, exc.message)


@dataclass(frozen=True)
class DetectRequest:
    """One picture: encoded bytes (decoded in the detector) or an RGB uint8 array."""

    image: bytes | np.ndarray
    crops: dict[str, CropSpec] = field(default_factory=dict)
    max_faces: int | None = None
    min_score: float | None = None


@dataclass(frozen=True)
class DetectReply:
    """Faces of one picture and, per downstream stage, their crops stacked (F, H, W, 3)."""

    width: int = 0
    height: int = 0
    faces: tuple[Face, ...] = ()
    crops: dict[str, np.ndarray] = field(default_factory=dict)
    error: StageError | None = None
    decode_ms: float = 0.0
    detect_ms: float = 0.0
    # What the replica that answered runs (family, source, variant, provider, device, landmarks).
    model: dict | None = None


def _as_rgb(image: bytes | np.ndarray, max_pixels: int) -> np.ndarray:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), max_pixels)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise FacegraphError(f"an image array must be (H, W, 3) RGB uint8, got {array.shape} {array.dtype}", code="invalid_image")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise FacegraphError(f"the image has {array.shape[0] * array.shape[1]} pixels; the limit is {max_pixels}", code="image_too_large")
    return np.ascontiguousarray(array)


def _detect_each(detector: Detector, images: list, valid: list[int], errors: list) -> dict[int, list[Face]]:
    """Faces per valid picture: one batch call; if it fails, each picture alone, so one bad item fails only itself."""
    if not valid:
        return {}
    try:
        return dict(zip(valid, detector.detect([images[i] for i in valid])))
    except Exception as exc:  # find the picture that failed: the others still get their faces
        logger.warning("a detector batch of %d failed (%s); detecting its pictures one by one", len(valid), type(exc).__name__)
    found: dict[int, list[Face]] = {}
    for i in valid:
        try:
            found[i] = detector.detect([images[i]])[0]
        except Exception as exc:  # the model failed on this picture: a server-side failure of this item only
            errors[i] = StageError("detection_failed", f"the detector failed on this picture ({type(exc).__name__})")
    return found


def check_crops(crops: np.ndarray, spec: CropSpec, stage: str) -> None:
    """Refuse crops cut for another model (a rolling update changed the crop size): the caller retries."""
    width, height = spec.size
    if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
        raise FacegraphError(f"the {stage} takes {width}x{height} crops; these were cut for another model", code="crop_mismatch")


def detect_batch(detector: Detector, requests: Sequence[DetectRequest], max_pixels: int) -> list[DetectReply]:
    """Decode, detect in one batch, filter per request, cut crops for each downstream stage."""
    started = time.perf_counter()
    images: list[np.ndarray | None] = []
    errors: list[StageError | None] = []
    for request in requests:
        try:
            images.append(_as_rgb(request.image, max_pixels))
            errors.append(None)
        except FacegraphError as exc:
            images.append(None)
            errors.append(StageError.of(exc))
    decoded = time.perf_counter()
    valid = [i for i, image in enumerate(images) if image is not None]
    per_item = _detect_each(detector, images, valid, errors)
    detected = time.perf_counter()
    decode_ms = (decoded - started) * 1000 / max(len(requests), 1)
    detect_ms = (detected - decoded) * 1000
    replies = []
    for i, request in enumerate(requests):
        if errors[i] is not None:
            replies.append(DetectReply(error=errors[i]))
            continue
        faces = per_item[i]
        if request.min_score is not None:
            faces = [f for f in faces if f.score >= request.min_score]
        if request.max_faces is not None:
            faces = faces[: request.max_faces]
        image = images[i]
        crops = {
            stage: np.stack([crop_face(image, face, spec) for face in faces])
            if faces
            else np.zeros((0, spec.size[1], spec.size[0], 3), np.uint8)
            for stage, spec in request.crops.items()
        }
        replies.append(
            DetectReply(
                width=image.shape[1],
                height=image.shape[0],
                faces=tuple(faces),
                crops=crops,
                decode_ms=decode_ms,
                detect_ms=detect_ms,
            )
        )
    return replies


def _split(rows: Sequence, counts: Sequence[int]) -> list:
    out, start = [], 0
    for n in counts:
        out.append(rows[start : start + n])
        start += n
    return out


def embed_batch(recognizer: Recognizer, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Embeddings for several requests' crops in one session call; (F_i, D) per request."""
    counts = [len(g) for g in groups]
    crops = [crop for group in groups for crop in group]
    if not crops:
        return [np.zeros((0, 0), np.float32) for _ in groups]
    return _split(recognizer.embed(crops), counts)


def classify_batch(classifier: Classifier, groups: Sequence[np.ndarray]) -> list[list[Classification]]:
    """Verdicts for several requests' crops in one session call."""
    counts = [len(g) for g in groups]
    crops = [crop for group in groups for crop in group]
    return _split(classifier.classify(crops), counts) if crops else [[] for _ in groups]
