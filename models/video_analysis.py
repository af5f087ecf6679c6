"""A clip analysed in one process: sampled frames -> detections, embeddings, deepfake scores -> tracks.

The graph runs the same steps across deployments (frames through the detector's batches, crops
through the branches); this module chains the very same per-batch functions of
:mod:`models.pipeline` in process, for tests, benchmarks' in-process baseline and bulk jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from .base import Classifier, Detector, Recognizer
from .errors import FacegraphError
from .pipeline import DetectRequest, classify_batch, detect_batch, embed_batch
from .tracking import FrameFaces, Track, TrackingSettings, track_faces
from .video import Frame


@dataclass(frozen=True)
class VideoModels:
    """The in-process models: a detector and, optionally, a recognizer and a deepfake classifier."""

    detector: Detector
    recognizer: Recognizer | None = None
    classifier: Classifier | None = None


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def frames_faces(
    frames: Iterable[Frame], models: VideoModels, max_pixels: int, batch_size: int = 4, min_score: float | None = None
) -> Iterator[FrameFaces]:
    """Per sampled frame, its faces with their embeddings and deepfake probabilities (as the models give).

    Frames go through the detector ``batch_size`` at a time (one model call per batch), their
    faces' crops through the recognizer and the classifier in one call per batch each.

    Raises:
        FacegraphError: a frame the detector refused (its code, e.g. ``frame_too_large``).
    """
    crops = {}
    if models.recognizer is not None:
        crops["recognizer"] = models.recognizer.crop_spec
    if models.classifier is not None:
        crops["deepfake"] = models.classifier.crop_spec
    for batch in _batches(frames, batch_size):
        replies = detect_batch(models.detector, [DetectRequest(f.image, crops, min_score=min_score) for f in batch], max_pixels)
        for reply in replies:
            if reply.error is not None:
                raise FacegraphError(reply.error.message, code=reply.error.code)
        vectors = embed_batch(models.recognizer, [r.crops["recognizer"] for r in replies]) if models.recognizer else None
        verdicts = classify_batch(models.classifier, [r.crops["deepfake"] for r in replies]) if models.classifier else None
        for k, (frame, reply) in enumerate(zip(batch, replies)):
            embeddings = None
            if vectors is not None:
                embeddings = vectors[k] if len(reply.faces) else vectors[k].reshape(0, models.recognizer.dimension)
            probabilities = None if verdicts is None else tuple(v.fake_probability for v in verdicts[k])
            yield FrameFaces(frame.index, frame.timestamp_s, reply.faces, embeddings, probabilities)


def analyze_frames(
    frames: Iterable[Frame],
    models: VideoModels,
    max_pixels: int,
    settings: TrackingSettings | None = None,
    batch_size: int = 4,
    min_score: float | None = None,
) -> tuple[list[FrameFaces], list[Track]]:
    """Sampled frames -> per-frame faces and the clip's tracks (linked with the recognizer's own metric and threshold)."""
    found = list(frames_faces(frames, models, max_pixels, batch_size, min_score))
    if models.recognizer is None:  # no embeddings: boxes link, the metric is never used
        return found, track_faces(found, settings)
    return found, track_faces(found, settings, models.recognizer.metric, models.recognizer.match_threshold)
