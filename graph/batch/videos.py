"""``facegraph batch`` on clips: a parquet row per track under ``DEST/video_tracks``, a row per face
per sampled frame under ``DEST/video_faces``.

Each clip is read, hashed, probed and sampled in a :class:`VideoStage` actor, which runs the
detector, recognizer and deepfake classifier in process (``models.video_analysis``: the same
per-batch functions the Serve replicas call) and links the faces into tracks (``models.tracking``,
the rules of ``POST /v1/analyze/video``). A clip with no face, or one that cannot be read or
decoded, is one row of its own (``status`` ``no_face`` or ``error``), so a rerun skips it too: clips
DEST already holds (same path and content) are not read again. Clips longer than one request
takes are what this is for: only ``max_pixels`` per frame holds here, not the request limits.
"""

from __future__ import annotations

import hashlib
import posixpath
import time

import numpy as np
import pyarrow as pa

from facegraph.graph.batch.rows import MODEL
from facegraph.graph.batch.sources import Location
from facegraph.graph.config import FacegraphConfig
from facegraph.graph.core.stages import answered_by, embedding_space, load_stage
from facegraph.graph.process import assigned_resources
from facegraph.models.errors import FacegraphError
from facegraph.models.tracking import Track
from facegraph.models.video import probe, sample
from facegraph.models.video_analysis import VideoModels, analyze_frames

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
TRACKS, FACES = "video_tracks", "video_faces"
# A bulk job takes clips of any length and size; frames are still held to max_pixels.
NO_REQUEST_LIMITS = {"max_video_bytes": 2**62, "max_duration_s": 7 * 24 * 3600.0, "max_frames": 2**31 - 1}

BOX = pa.list_(pa.float32(), 4)
FACE = pa.struct(
    [
        ("frame", pa.int32()), ("time_s", pa.float32()), ("bbox", BOX), ("score", pa.float32()),
        ("landmarks", pa.list_(pa.list_(pa.float32(), 2))), ("quality", pa.float32()), ("fake_probability", pa.float32()),
    ]
)  # fmt: skip
CLIP = [("path", pa.string()), ("sha256", pa.string())]
# One row per track, or one per clip with no face or an error; ``faces`` becomes the second table.
TRACK = pa.schema(
    CLIP
    + [
        ("status", pa.string()), ("error_code", pa.string()), ("error", pa.string()),  # "track", "no_face" or "error"
        ("duration_s", pa.float32()), ("sampled_frames", pa.int32()),
        ("track_id", pa.int32()), ("start_s", pa.float32()), ("end_s", pa.float32()), ("frames", pa.list_(pa.int32())),
        ("best", FACE), ("embedding", pa.list_(pa.float32())), ("embedding_space", pa.string()),
        ("deepfake_mean", pa.float32()), ("deepfake_max", pa.float32()), ("deepfake_share", pa.float32()), ("deepfake_label", pa.string()),
        ("detector_model", MODEL), ("recognizer_model", MODEL), ("deepfake_model", MODEL),
        ("seconds", pa.float32()), ("faces", pa.list_(FACE)),
    ]
)  # fmt: skip
FACE_ROWS = pa.schema(CLIP + [("track_id", pa.int32())] + list(FACE))


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_SUFFIXES)


def tables(dest: Location) -> tuple[Location, Location]:
    """Where the track rows and the face rows of DEST's clips go."""
    return Location(dest.fs, posixpath.join(dest.path, TRACKS)), Location(dest.fs, posixpath.join(dest.path, FACES))


def _face(face) -> dict:
    found = face.face
    landmarks = None if found.landmarks is None else np.asarray(found.landmarks, np.float32).tolist()
    return {
        "frame": face.frame, "time_s": face.timestamp_s, "bbox": [float(v) for v in found.bbox], "score": float(found.score),
        "landmarks": landmarks, "quality": face.quality, "fake_probability": face.fake_probability,
    }  # fmt: skip


class VideoStage:
    """Clips -> their tracks, in an actor holding the config's models on the resources it was given."""

    def __init__(self, config: FacegraphConfig, fs, done: frozenset[tuple[str, str]]):
        resources, cache = assigned_resources(), config.cache_dir()
        loaded = {
            stage: load_stage(c.model, stage, cache, resources)
            for stage, c in (("detector", config.detector), ("recognizer", config.recognizer), ("deepfake", config.deepfake))
            if c is not None
        }
        adapter = lambda stage: loaded[stage].adapter if stage in loaded else None  # noqa: E731
        self.models = VideoModels(adapter("detector"), adapter("recognizer"), adapter("deepfake"))
        self.answered = {stage: answered_by(model) for stage, model in loaded.items()}
        self.space = embedding_space(loaded["recognizer"]).key if "recognizer" in loaded else None
        self.limits = config.ingress.video_limits().model_copy(update=NO_REQUEST_LIMITS)
        self.batch_size = config.detector.deployment.batching.max_batch_size
        self.fs, self.done = fs, done

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for path in batch.column("path").to_pylist():
            rows.extend(self.clip(path))
        return pa.Table.from_pylist(rows, schema=TRACK)

    def clip(self, path: str) -> list[dict]:
        """The rows of one clip: its tracks, or one row saying why it has none (none when DEST holds it)."""
        started = time.perf_counter()
        base = {"path": path, "sha256": None}
        try:
            with self.fs.open_input_file(path) as fh:
                data = fh.read()
        except OSError as exc:
            return [{**base, "status": "error", "error_code": "unreadable", "error": f"the file could not be read ({type(exc).__name__})"}]
        base["sha256"] = hashlib.sha256(data).hexdigest()
        if (path, base["sha256"]) in self.done:
            return []
        try:
            info = probe(data, self.limits)
            found, tracks = analyze_frames(sample(data, info, limits=self.limits), self.models, self.limits.max_pixels, batch_size=self.batch_size)
        except FacegraphError as exc:
            return [{**base, "status": "error", "error_code": exc.code, "error": exc.message}]
        clip = {**base, "duration_s": info.duration_s, "sampled_frames": len(found), "seconds": time.perf_counter() - started}
        if not tracks:
            return [{**clip, "status": "no_face"}]
        return [self._track(clip, track) for track in tracks]

    def _track(self, clip: dict, track: Track) -> dict:
        row = {
            **clip, "status": "track", "track_id": track.track_id, "start_s": track.start_s, "end_s": track.end_s,
            "frames": list(track.frames), "best": _face(track.best), "faces": [_face(f) for f in track.faces],
            "detector_model": self.answered["detector"],
        }  # fmt: skip
        if track.mean_embedding is not None:
            row.update(embedding=track.mean_embedding.tolist(), embedding_space=self.space, recognizer_model=self.answered["recognizer"])
        if track.deepfake is not None:
            summary = track.deepfake
            row.update(
                deepfake_mean=summary.mean, deepfake_max=summary.max, deepfake_share=summary.share_over_threshold,
                deepfake_label=summary.label, deepfake_model=self.answered["deepfake"],
            )  # fmt: skip
        return row


def face_rows(batch: pa.Table) -> pa.Table:
    """Track rows -> one row per face per sampled frame (the second table)."""
    rows = [
        {"path": row["path"], "sha256": row["sha256"], "track_id": row["track_id"], **face}
        for row in batch.select(["path", "sha256", "track_id", "faces"]).to_pylist()
        for face in row["faces"] or ()
    ]
    return pa.Table.from_pylist(rows, schema=FACE_ROWS)
