"""Running a model and its variant on the same inputs, and how far apart their answers are."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from facegraph.models.base import Adapter
from facegraph.models.embedding import Metric, distances, is_match, similarities
from facegraph.models.geometry import crop_face, iou
from facegraph.models.pack.build import sha256_of
from facegraph.models.registry import LoadedModel, ModelSpec, load_model, pack_file
from facegraph.models.types import Face
from facegraph.models.optimize.floors import EMBED_CHUNK, OptimizeError, TIMING_THREADS
from facegraph.models.optimize.pictures import Picture, _spread, calibration_pictures, measurement_pictures

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- running and recording


class _Recorder:
    """A session stand-in that keeps a copy of every input feed and runs the real session."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, output_names, input_feed):
        self.feeds.append({k: np.array(v, copy=True) for k, v in input_feed.items()})
        return self.session.run(output_names, input_feed)


@contextlib.contextmanager
def recording(adapter: Adapter) -> Iterator[dict[str, list[dict[str, np.ndarray]]]]:
    """Within the block, every input the adapter feeds its sessions is kept, per file name."""
    real = dict(adapter.sessions)
    recorders = {name: _Recorder(session) for name, session in real.items()}
    feeds: dict[str, list[dict[str, np.ndarray]]] = {name: r.feeds for name, r in recorders.items()}
    adapter.sessions.update(recorders)
    try:
        yield feeds
    finally:
        adapter.sessions.update(real)


@dataclass(frozen=True)
class Sample:
    """One measurement input: a picture (detectors) or a face crop (recognizers, classifiers)."""

    name: str
    data: np.ndarray = field(repr=False)
    identity: str | None


def run_role(adapter: Adapter, samples: Sequence[Sample]) -> list:
    """The adapter's answers: faces per picture, embedding rows, or fake probabilities."""
    if adapter.role == "detector":
        return [adapter.detect([s.data])[0] for s in samples]
    out: list = []
    for start in range(0, len(samples), EMBED_CHUNK):
        chunk = [s.data for s in samples[start : start + EMBED_CHUNK]]
        if adapter.role == "recognizer":
            out += list(adapter.embed(chunk))
        else:
            out += [c.fake_probability for c in adapter.classify(chunk)]
    return out


@lru_cache(maxsize=4)
def _faces(cache_dir: str, pnet_sha: str, which: str) -> tuple[tuple[Picture, tuple[Face, ...]], ...]:
    """The default pack's fp32 MTCNN over the measurement or calibration pictures (cached per pack build)."""
    detector = load_model(ModelSpec(family="mtcnn", pack="mtcnn", device="cpu"), cpu_threads=TIMING_THREADS, cache_dir=Path(cache_dir)).adapter
    pictures = measurement_pictures() if which == "measurement" else calibration_pictures()
    return tuple((p, tuple(detector.detect([p.image])[0])) for p in pictures)


def face_crops(cache_dir: Path | None, spec, which: Literal["measurement", "calibration"]) -> list[Sample]:
    """Crops cut by ``spec`` around every face our MTCNN finds in the pictures."""
    if cache_dir is None or not pack_file(cache_dir, "mtcnn", "pnet", "fp32").is_file():
        raise OptimizeError("measuring a recognizer or classifier needs the default pack's MTCNN to find faces: run `facegraph models build`")
    pnet = pack_file(cache_dir, "mtcnn", "pnet", "fp32")
    samples = []
    for picture, faces in _faces(str(cache_dir), sha256_of(pnet), which):
        for k, face in enumerate(faces):
            samples.append(Sample(f"{picture.name}#{k}", crop_face(picture.image, face, spec), picture.identity))
    return samples


def samples_for(loaded: LoadedModel, which: Literal["measurement", "calibration"], cache_dir: Path | None) -> list[Sample]:
    adapter = loaded.adapter
    if adapter.role == "detector":
        pictures = measurement_pictures() if which == "measurement" else calibration_pictures()
        return [Sample(p.name, p.image, p.identity) for p in pictures]
    return face_crops(cache_dir, adapter.crop_spec, which)


def calibration_feeds(loaded: LoadedModel, cache_dir: Path | None, limit: int | None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per file, the inputs the fp32 model really gets on the calibration pictures (at most ``limit`` per file)."""
    samples = samples_for(loaded, "calibration", cache_dir)
    with recording(loaded.adapter) as feeds:
        run_role(loaded.adapter, samples)
    return {name: _spread(list(f), limit) for name, f in feeds.items()}


# --------------------------------------------------------------------------- comparing


def _match(a: Sequence[Face], b: Sequence[Face]) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two face lists by box IoU, best pairs first."""
    if not a or not b:
        return []
    overlaps = iou(np.array([f.bbox for f in a]), np.array([f.bbox for f in b]))
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-overlaps, axis=None):
        i, j = np.unravel_index(flat, overlaps.shape)
        if overlaps[i, j] <= 0:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j), float(overlaps[i, j])))
    return pairs


def compare_detections(reference: list[list[Face]], variant: list[list[Face]]) -> dict:
    """Box IoU, score and landmark changes of matched faces; unmatched faces count IoU 0."""
    ious, scores, shifts, unmatched = [], [], [], 0
    for a, b in zip(reference, variant):
        pairs = _match(a, b)
        unmatched += len(a) + len(b) - 2 * len(pairs)
        for i, j, overlap in pairs:
            ious.append(overlap)
            scores.append(abs(a[i].score - b[j].score))
            if a[i].landmarks is not None and b[j].landmarks is not None:
                shifts.append(float(np.abs(np.asarray(a[i].landmarks) - np.asarray(b[j].landmarks)).max()))
    count = len(ious) + unmatched
    return {
        "pictures": len(reference),
        "faces_fp32": sum(len(a) for a in reference),
        "faces_variant": sum(len(b) for b in variant),
        "unmatched_faces": unmatched,
        "mean_box_iou": round(float(sum(ious) / count), 5) if count else None,
        "min_box_iou": round(float(min(ious + [0.0] * unmatched)), 5) if count else None,
        "max_score_change": round(float(max(scores)), 6) if scores else None,
        "max_landmark_shift_px": round(float(max(shifts)), 3) if shifts else None,
    }


def _pair_distances(embeddings: np.ndarray, metric: Metric, pairs: list[tuple[int, int]]) -> np.ndarray:
    return distances(embeddings[[i for i, _ in pairs]], embeddings[[j for _, j in pairs]], metric)


def compare_embeddings(samples: Sequence[Sample], reference: np.ndarray, variant: np.ndarray, metric: Metric, threshold: float) -> dict:
    """Per-crop embedding agreement, and same/different decisions on pairs of crops.

    The test pairs are those whose crops both name a person: the astronaut moved about
    (same) and the astronaut against the camera man (different); ``decision_changes``
    counts how many of them the variant decides otherwise than fp32. Pairs of
    ``lfw_subset`` faces (people unknown, many near the threshold) show how often a
    borderline decision flips: ``borderline_decision_changes``, reported, not floored.
    """
    cosine = similarities(reference, variant)
    result: dict[str, Any] = {
        "crops": len(samples),
        "min_embedding_cosine": round(float(cosine.min()), 6) if len(samples) else None,
        "mean_embedding_cosine": round(float(cosine.mean()), 6) if len(samples) else None,
        "max_embedding_distance": round(float(np.linalg.norm(reference - variant, axis=1).max()), 6) if len(samples) else None,
        "metric": metric,
        "threshold": threshold,
    }
    known = [i for i, s in enumerate(samples) if s.identity is not None]
    unknown = [i for i, s in enumerate(samples) if s.identity is None]
    groups = {
        "": [(i, j) for n, i in enumerate(known) for j in known[n + 1 :]],
        "borderline_": [(i, j) for n, i in enumerate(unknown) for j in unknown[n + 1 :]],
    }
    for prefix, pairs in groups.items():
        result[f"{prefix}pairs"] = len(pairs)
        result[f"{prefix}decision_changes"] = 0
        if not pairs:
            continue
        before, after = _pair_distances(reference, metric, pairs), _pair_distances(variant, metric, pairs)
        same_before, same_after = is_match(before, metric, threshold), is_match(after, metric, threshold)
        result[f"{prefix}decision_changes"] = int((same_before != same_after).sum())
        result[f"{prefix}max_pair_score_change"] = round(float(np.abs(after - before).max()), 6)
        if not prefix:
            truth = np.array([samples[i].identity == samples[j].identity for i, j in pairs])
            result["correct_fp32"] = int((same_before == truth).sum())
            result["correct_variant"] = int((same_after == truth).sum())
    return result


def compare_probabilities(reference: Sequence[float], variant: Sequence[float]) -> dict:
    a, b = np.asarray(reference, np.float64), np.asarray(variant, np.float64)
    change = np.abs(a - b)
    return {
        "crops": len(a),
        "max_probability_change": round(float(change.max()), 6) if len(a) else None,
        "mean_probability_change": round(float(change.mean()), 6) if len(a) else None,
        "label_changes": int(((a >= 0.5) != (b >= 0.5)).sum()),
    }


def compare(loaded: LoadedModel, samples: Sequence[Sample], reference: list, variant: list) -> dict:
    adapter = loaded.adapter
    if adapter.role == "detector":
        return compare_detections(reference, variant)
    if adapter.role == "recognizer":
        ref, var = np.array(reference, np.float32).reshape(len(samples), -1), np.array(variant, np.float32).reshape(len(samples), -1)
        return compare_embeddings(samples, ref, var, adapter.metric, adapter.match_threshold)
    return compare_probabilities(reference, variant)


def time_sessions(first: dict, second: dict, feeds: dict[str, list[dict[str, np.ndarray]]], rounds: int) -> tuple[float, float]:
    """Median milliseconds per round (every feed of every file once) of two session sets, interleaved."""

    def one(sessions: dict) -> float:
        started = time.perf_counter()
        for name, items in feeds.items():
            for feed in items:
                sessions[name].run(None, feed)
        return (time.perf_counter() - started) * 1000

    one(first), one(second)  # warm-up: first runs allocate
    a, b = [], []
    for _ in range(max(1, rounds)):
        a.append(one(first))
        b.append(one(second))
    return statistics.median(a), statistics.median(b)
