"""Faces of a clip's sampled frames linked into tracks: one track per person, as far as the evidence goes.

:func:`track_faces` is pure and deterministic: the same frames give the same tracks. The rules
(README, "Video (in progress)"):

1. **Linking** frame to frame: one optimal assignment (``scipy.optimize.linear_sum_assignment``)
   between the tracks seen within ``max_gap_s`` and the frame's faces. With embeddings, a face
   may join a track only when its embedding is a match (the recognizer's own rule,
   :func:`models.embedding.is_match`, at ``link_threshold``) for one of the track's recent or best
   embeddings; the cost is that distance, less a little for box overlap. Without embeddings, a
   face joins the track whose predicted box (its last box moved by its last velocity) it overlaps
   most, at an IoU of at least ``min_iou``.
2. **Re-identification**: a face left over is compared with every other track of the clip
   (also those unseen for longer than ``max_gap_s``: the person left and came back, or was
   hidden) and joins the closest that matches. Only embeddings re-identify; a box never does.
3. Anything else starts a new track.

Each track reports its best face (score x size x frontalness, :func:`frontalness`), its best few
embeddings and their mean, and its deepfake probabilities summarised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from .embedding import Match, Metric, distances, is_match
from .geometry import ARCFACE_TEMPLATE_112, iou
from .types import FIVE_POINTS, Face

# Where the nose sits between the eye line and the mouth line on a frontal face (ArcFace's template).
_EYES_Y = (ARCFACE_TEMPLATE_112[0][1] + ARCFACE_TEMPLATE_112[1][1]) / 2
_MOUTH_Y = (ARCFACE_TEMPLATE_112[3][1] + ARCFACE_TEMPLATE_112[4][1]) / 2
FRONTAL_NOSE_DEPTH = (ARCFACE_TEMPLATE_112[2][1] - _EYES_Y) / (_MOUTH_Y - _EYES_Y)
_NO_LINK = 1e6


class TrackingSettings(BaseModel):
    """How faces are linked into tracks (the defaults suit 1 to 5 sampled frames per second)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Embeddings link a face to a track at this distance (in the recognizer's metric); None: the recognizer's match threshold.
    link_threshold: float | None = None
    # Boxes alone (no embeddings) link at this IoU with the track's predicted box.
    min_iou: float = Field(0.2, ge=0, le=1)
    # A track unseen for longer than this is not linked frame to frame any more; only re-identified.
    max_gap_s: float = Field(1.5, ge=0)
    # Embeddings kept per track for linking (the most recent ones) and reported (the best ones).
    recent_embeddings: int = Field(4, ge=1)
    best_embeddings: int = Field(3, ge=1)
    # A face's deepfake probability at or above this counts as fake; a track is labelled fake
    # when at least ``fake_share`` of its scored faces are.
    deepfake_threshold: float = Field(0.5, ge=0, le=1)
    fake_share: float = Field(0.5, gt=0, le=1)


@dataclass(frozen=True)
class FrameFaces:
    """What the models found in one sampled frame.

    Attributes:
        index: the sampled frame's ordinal (:class:`models.video.Frame`'s).
        timestamp_s: its time in the clip.
        faces: the detector's faces.
        embeddings: (F, D) float32, row i for ``faces[i]``, or None without a recognizer.
        fake_probabilities: one per face, or None without a deepfake classifier.
    """

    index: int
    timestamp_s: float
    faces: tuple[Face, ...]
    embeddings: np.ndarray | None = None
    fake_probabilities: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrackFace:
    """One face of a track: where and when, how good a view it is, and its deepfake probability."""

    frame: int
    timestamp_s: float
    face: Face
    quality: float
    fake_probability: float | None = None

    def to_json(self) -> dict:
        out = {"frame": self.frame, "time_s": round(self.timestamp_s, 3), **self.face.to_json(), "quality": round(self.quality, 4)}
        if self.fake_probability is not None:
            out["fake_probability"] = round(float(self.fake_probability), 5)
        return out


@dataclass(frozen=True)
class DeepfakeSummary:
    """A track's per-face deepfake probabilities summarised; ``label`` is ``fake`` when at least
    ``fake_share`` of them reach ``threshold``."""

    mean: float
    max: float
    share_over_threshold: float
    label: Literal["real", "fake"]
    threshold: float
    faces: int

    def to_json(self) -> dict:
        return {
            "mean": round(self.mean, 5), "max": round(self.max, 5), "share_over_threshold": round(self.share_over_threshold, 4),
            "label": self.label, "threshold": self.threshold, "faces": self.faces,
        }  # fmt: skip


@dataclass(frozen=True)
class Track:
    """One person followed through a clip.

    Attributes:
        track_id: 0, 1, ... in order of first appearance.
        start_s, end_s: the times of its first and last faces.
        frames: the sampled frames it appears in, ascending.
        faces: one per frame, in order.
        best: the face with the best score x size x frontalness (the earliest on a tie).
        best_embeddings: (k, D) float32, the embeddings of its k best faces, best first; None without embeddings.
        mean_embedding: (D,) float32, the mean of all its embeddings; None without embeddings.
        deepfake: its probabilities summarised; None without a classifier.
    """

    track_id: int
    start_s: float
    end_s: float
    frames: tuple[int, ...]
    faces: tuple[TrackFace, ...]
    best: TrackFace
    best_embeddings: np.ndarray | None = None
    mean_embedding: np.ndarray | None = None
    deepfake: DeepfakeSummary | None = None

    def low_quality(self, is_low: Callable[[Face], bool]) -> bool:
        """True when no face of the track clears the floor that ``is_low`` applies (the identify route's own)."""
        return all(is_low(f.face) for f in self.faces)

    def to_json(self, embeddings: bool = False) -> dict:
        out = {
            "track_id": self.track_id, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
            "frames": list(self.frames), "faces": [f.to_json() for f in self.faces], "best": self.best.to_json(),
            "deepfake": None if self.deepfake is None else self.deepfake.to_json(),
        }  # fmt: skip
        if embeddings:
            out["embedding"] = None if self.mean_embedding is None else [round(float(v), 6) for v in self.mean_embedding]
        return out


def frontalness(face: Face) -> float:
    """How squarely a face looks at the camera, 0 to 1, from its five points (1.0 without them).

    In the frame where the eyes are level (roll removed), with ``e`` the eye distance: yaw is the
    nose's sideways offset from the midline between the eyes' and the mouth's centres, over
    ``e`` (a nose in front of an eye gives 0.5; a profile, the nose beyond the eyes, 1); pitch is how far the nose's height
    between the eye line and the mouth line is from a frontal face's (ArcFace's template:
    ``FRONTAL_NOSE_DEPTH``, 0.49), over that frontal value. Frontalness is
    ``(1 - yaw) x (1 - pitch)``, each clipped to 0..1.
    """
    if face.landmarks is None or not set(FIVE_POINTS) <= set(face.points):
        return 1.0
    p = {name: np.asarray(face.landmarks[face.points.index(name)], np.float64) for name in FIVE_POINTS}
    across = p["right_eye"] - p["left_eye"]
    eye_distance = float(np.hypot(*across))
    if eye_distance < 1e-6:
        return 0.0
    ux = across / eye_distance
    uy = np.array([-ux[1], ux[0]])
    eyes = (p["left_eye"] + p["right_eye"]) / 2
    mouth = (p["mouth_left"] + p["mouth_right"]) / 2
    nose = p["nose"] - eyes
    mouth_rel = mouth - eyes
    midline_x = float(mouth_rel @ ux) * float(nose @ uy) / max(float(mouth_rel @ uy), 1e-6)  # the midline at the nose's height
    yaw = abs(float(nose @ ux) - midline_x) / eye_distance
    depth = float(nose @ uy) / max(float(mouth_rel @ uy), 1e-6)
    pitch = abs(depth - FRONTAL_NOSE_DEPTH) / FRONTAL_NOSE_DEPTH
    return float(np.clip(1 - yaw, 0, 1) * np.clip(1 - pitch, 0, 1))


def face_quality(face: Face) -> float:
    """score x size x frontalness; size is the square root of the box's area in pixels."""
    x1, y1, x2, y2 = face.bbox
    return float(face.score) * float(np.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))) * frontalness(face)


@dataclass
class _Open:
    """A track being built (mutable inside :func:`track_faces` only)."""

    track_id: int
    faces: list[TrackFace] = field(default_factory=list)
    embeddings: list[np.ndarray | None] = field(default_factory=list)

    @property
    def last(self) -> TrackFace:
        return self.faces[-1]

    def predicted_box(self, at_s: float) -> np.ndarray:
        """The last box moved on by the last velocity (constant motion between samples)."""
        box = np.asarray(self.last.face.bbox, np.float64)
        if len(self.faces) < 2:
            return box
        before = self.faces[-2]
        dt = self.last.timestamp_s - before.timestamp_s
        if dt <= 0:
            return box
        velocity = (box - np.asarray(before.face.bbox, np.float64)) / dt
        return box + velocity * (at_s - self.last.timestamp_s)

    def references(self, recent: int, best: int) -> np.ndarray | None:
        """The embeddings a new face is compared with: the most recent ones and the best ones."""
        rows = [(i, e) for i, e in enumerate(self.embeddings) if e is not None]
        if not rows:
            return None
        keep = {i for i, _ in rows[-recent:]}
        keep |= {i for i, _ in sorted(rows, key=lambda r: (-self.faces[r[0]].quality, r[0]))[:best]}
        return np.stack([e for i, e in rows if i in keep])


def _closest(references: np.ndarray | None, embedding: np.ndarray | None, metric: Metric) -> float | None:
    if references is None or embedding is None:
        return None
    return float(distances(references, embedding[None, :], metric).min())


def track_faces(
    frames: Sequence[FrameFaces],
    settings: TrackingSettings | None = None,
    metric: Metric = "euclidean",
    match_threshold: float = 0.6,
) -> list[Track]:
    """Link the faces of sampled frames into tracks (rules in the module's docstring).

    Args:
        frames: in time order.
        settings: linking rules; ``link_threshold`` None takes ``match_threshold``.
        metric, match_threshold: the recognizer's (``Embeddings.space.metric``, ``Embeddings.match_threshold``).

    Returns:
        The tracks, by first appearance.
    """
    settings = settings or TrackingSettings()
    threshold = match_threshold if settings.link_threshold is None else settings.link_threshold
    tracks: list[_Open] = []
    for frame in sorted(frames, key=lambda f: (f.timestamp_s, f.index)):
        _check(frame)
        embeddings = [None if frame.embeddings is None else np.asarray(frame.embeddings[i], np.float32) for i in range(len(frame.faces))]
        placed = _link(tracks, frame, embeddings, settings, metric, threshold)
        left = [i for i in range(len(frame.faces)) if i not in placed]
        placed.update(_reidentify(tracks, frame, embeddings, left, set(placed.values()), settings, metric, threshold))
        for i in range(len(frame.faces)):
            if i not in placed:
                tracks.append(_Open(len(tracks)))
                placed[i] = tracks[-1].track_id
            probability = None if frame.fake_probabilities is None else float(frame.fake_probabilities[i])
            face = frame.faces[i]
            tracks[placed[i]].faces.append(TrackFace(frame.index, float(frame.timestamp_s), face, face_quality(face), probability))
            tracks[placed[i]].embeddings.append(embeddings[i])
    return [_finish(t, settings) for t in tracks]


def _check(frame: FrameFaces) -> None:
    n = len(frame.faces)
    if frame.embeddings is not None and len(frame.embeddings) != n:
        raise ValueError(f"frame {frame.index}: {len(frame.embeddings)} embeddings for {n} faces")
    if frame.fake_probabilities is not None and len(frame.fake_probabilities) != n:
        raise ValueError(f"frame {frame.index}: {len(frame.fake_probabilities)} deepfake probabilities for {n} faces")


def _link(tracks, frame, embeddings, settings, metric, threshold) -> dict[int, int]:
    """Frame-to-frame: faces -> ids of tracks seen within ``max_gap_s`` (one optimal assignment)."""
    live = [t for t in tracks if frame.timestamp_s - t.last.timestamp_s <= settings.max_gap_s + 1e-9]
    if not live or not frame.faces:
        return {}
    boxes = np.asarray([f.bbox for f in frame.faces], np.float64)
    cost = np.full((len(live), len(frame.faces)), _NO_LINK)
    for r, track in enumerate(live):
        overlap = iou(track.predicted_box(frame.timestamp_s)[None, :], boxes)[0]
        references = track.references(settings.recent_embeddings, settings.best_embeddings)
        for c in range(len(frame.faces)):
            distance = _closest(references, embeddings[c], metric)
            if distance is not None:
                if is_match(distance, metric, threshold):
                    cost[r, c] = distance - 0.05 * overlap[c]
            elif overlap[c] >= settings.min_iou:
                cost[r, c] = 1.0 - overlap[c]
    return _assign(cost, live)


def _reidentify(tracks, frame, embeddings, left, taken, settings, metric, threshold) -> dict[int, int]:
    """Faces still unplaced -> earlier tracks (any gap) whose embeddings they match; boxes never re-identify."""
    candidates = [t for t in tracks if t.track_id not in taken and t.last.frame != frame.index]
    if not left or not candidates:
        return {}
    cost = np.full((len(candidates), len(left)), _NO_LINK)
    for r, track in enumerate(candidates):
        references = track.references(settings.recent_embeddings, settings.best_embeddings)
        for c, i in enumerate(left):
            distance = _closest(references, embeddings[i], metric)
            if distance is not None and is_match(distance, metric, threshold):
                cost[r, c] = distance
    return {left[c]: t for c, t in _assign(cost, candidates).items()}


def _assign(cost: np.ndarray, tracks: list[_Open]) -> dict[int, int]:
    rows, cols = linear_sum_assignment(cost)
    return {int(c): tracks[r].track_id for r, c in zip(rows, cols) if cost[r, c] < _NO_LINK}


def _finish(track: _Open, settings: TrackingSettings) -> Track:
    faces = tuple(track.faces)
    best = max(faces, key=lambda f: (f.quality, -f.timestamp_s))
    rows = [(f, e) for f, e in zip(faces, track.embeddings) if e is not None]
    best_embeddings = mean = None
    if rows:
        ranked = sorted(range(len(rows)), key=lambda i: (-rows[i][0].quality, i))[: settings.best_embeddings]
        best_embeddings = np.stack([rows[i][1] for i in ranked]).astype(np.float32)
        mean = np.mean([e for _, e in rows], axis=0).astype(np.float32)
    return Track(
        track.track_id, faces[0].timestamp_s, faces[-1].timestamp_s, tuple(f.frame for f in faces), faces, best,
        best_embeddings, mean, _deepfake([f.fake_probability for f in faces], settings),
    )  # fmt: skip


def _deepfake(probabilities: list[float | None], settings: TrackingSettings) -> DeepfakeSummary | None:
    scored = np.asarray([p for p in probabilities if p is not None], np.float64)
    if not len(scored):
        return None
    share = float((scored >= settings.deepfake_threshold).mean())
    label: Literal["real", "fake"] = "fake" if share >= settings.fake_share else "real"
    return DeepfakeSummary(float(scored.mean()), float(scored.max()), share, label, settings.deepfake_threshold, len(scored))


@dataclass(frozen=True)
class TrackIdentity:
    """A track's identity from its best embeddings' searches: the subject a majority of them match, or None."""

    match: Match | None
    votes: int
    probes: int
    low_quality: bool

    def to_json(self) -> dict:
        return {
            "identity": None if self.match is None else self.match.to_json(),
            "votes": self.votes, "probes": self.probes, "low_quality": self.low_quality,
        }  # fmt: skip


def track_identity(best_matches: Sequence[Match | None], low_quality: bool = False) -> TrackIdentity:
    """Combine the searches of a track's best embeddings (each one's best match, or None) into one identity.

    Each probe's ``match`` flag is the gallery's own decision (the identify route's threshold).
    The track is that subject when more than half of its probes match it and no probe matches
    anyone else; otherwise unknown (a track is never split between two people's names). A
    low-quality track (no face clears the eye-distance floor) is never identified.
    """
    matched = [m for m in best_matches if m is not None and m.match]
    probes = len(best_matches)
    if low_quality or not matched or len({m.subject_id for m in matched}) > 1 or 2 * len(matched) <= probes:
        return TrackIdentity(None, len(matched) if len({m.subject_id for m in matched}) == 1 else 0, probes, low_quality)
    closest = min(matched, key=lambda m: m.distance)
    return TrackIdentity(closest, len(matched), probes, low_quality)
