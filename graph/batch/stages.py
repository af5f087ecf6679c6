"""The bulk job's stages as Ray Data callables over pyarrow tables, on the Serve graph's own functions.

Reading goes through the source's pyarrow filesystem; decoding is ``models.imaging.decode_image`` (a
bomb is refused from its header), in the detector's actors by default, as in the Serve detector:
a file's bytes travel between processes and nodes, not its pixels (up to 120 MB at 40 MP).
Detection, crops, embeddings and verdicts are ``models.pipeline``'s ``detect_batch``, ``embed_batch`` and
``classify_batch``, the very functions the Serve replicas call. A bad picture becomes its error row.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from facegraph.graph.batch.rows import CROP_COLUMNS, READ, replace_columns, split_ms, staged_schema
from facegraph.graph.core.stages import answered_by, embedding_space, load_stage
from facegraph.graph.process import assigned_resources
from facegraph.models.errors import FacegraphError
from facegraph.models.imaging import decode_image
from facegraph.models.pipeline import DetectRequest, classify_batch, detect_batch, embed_batch
from facegraph.models.registry import ModelSpec
from facegraph.models.types import CropSpec


def _read(fs, path: str) -> bytes:
    with fs.open_input_file(path) as fh:
        return fh.read()


def read_pictures(batch: pa.Table, fs, done: frozenset[tuple[str, str | None]], max_pixels: int, decode: bool) -> pa.Table:
    """Paths -> their bytes (``decode`` False) or decoded pictures; pictures whose (path, sha256) DEST holds are dropped.

    A file that cannot be read (gone, no permission) is an error row with no content hash:
    (path, None). With ``decode``, a file that is no picture is an error row here; otherwise the
    detector finds that out while decoding it, as a Serve detector replica does.
    """
    rows = []
    for path in batch.column("path").to_pylist():
        started = time.perf_counter()
        row = {"path": path, "sha256": None, "width": 0, "height": 0, "error_code": None, "error": None}
        try:
            data = _read(fs, path)
        except OSError as exc:
            data = None
            row.update(error_code="unreadable", error=f"the file could not be read ({type(exc).__name__})")
        if data is not None:
            row["sha256"] = hashlib.sha256(data).hexdigest()
        if (path, row["sha256"]) in done:
            continue
        if data is not None and not decode:
            row["data"] = data
        elif data is not None:
            try:
                image = decode_image(data, max_pixels)
                row.update(width=image.shape[1], height=image.shape[0], pixels=image.tobytes())
            except FacegraphError as exc:
                row.update(error_code=exc.code, error=exc.message)
        row["decode_ms"] = (time.perf_counter() - started) * 1000
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=READ)


def _crop_bytes(crops: np.ndarray, i: int) -> bytes:
    return np.ascontiguousarray(crops[i]).tobytes()


class DetectStage:
    """Faces of each picture and the crops each branch needs: one row per face or per face-less picture."""

    def __init__(self, spec: ModelSpec, cache_dir: Path, crops: dict[str, CropSpec], max_pixels: int):
        self.loaded = load_stage(spec, "detector", cache_dir, assigned_resources())
        self.model = answered_by(self.loaded)
        self.crops, self.max_pixels = crops, max_pixels
        self.schema = staged_schema(crops)

    def _face_row(self, base: dict, reply, k: int) -> dict:
        face = reply.faces[k]
        row = dict(base, status="face", faces=len(reply.faces), face=k, bbox=list(face.bbox), score=face.score)
        if face.landmarks is not None:
            row.update(landmarks=face.landmarks.tolist(), landmark_names=list(face.points))
        for stage in self.crops:
            row[CROP_COLUMNS[stage]] = _crop_bytes(reply.crops[stage], k)
        return row

    @staticmethod
    def _picture(row: dict, data: pa.Scalar, pixels: pa.Scalar) -> bytes | np.ndarray:
        if pixels.is_valid:
            return np.frombuffer(pixels.as_buffer(), np.uint8).reshape(row["height"], row["width"], 3)
        return data.as_py()

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        read = batch.drop_columns(["data", "pixels"]).to_pylist()
        data, pixels = batch.column("data"), batch.column("pixels")  # read in place: no copy of the pictures
        pictures = [i for i, row in enumerate(read) if row["error_code"] is None]
        requests = [DetectRequest(self._picture(read[i], data[i], pixels[i]), self.crops) for i in pictures]
        replies = dict(zip(pictures, detect_batch(self.loaded.adapter, requests, self.max_pixels)))
        rows = []
        for i, picture in enumerate(read):
            base = {k: picture[k] for k in ("path", "sha256", "width", "height", "error_code", "error")}
            base.update(status="error", faces=0)
            reply = replies.get(i)
            read_ms = picture["decode_ms"]
            if reply is not None:
                read_ms += reply.decode_ms  # zero when the reading task decoded it
                if reply.error is None:
                    base.update(width=reply.width, height=reply.height)
                if reply.error is None or reply.error.code == "detection_failed":  # the detector ran on it
                    base["detector_model"] = self.model
            if reply is None or reply.error is not None:  # unreadable or undecodable, or the detector failed on it
                if reply is not None:
                    base.update(error_code=reply.error.code, error=reply.error.message)
                picture_rows = [base]
            elif not reply.faces:
                picture_rows = [dict(base, status="no_face")]
            else:
                picture_rows = [self._face_row(base, reply, k) for k in range(len(reply.faces))]
            for row in picture_rows:
                row["decode_ms"] = read_ms / len(picture_rows)
            rows.extend(picture_rows)
        table = pa.Table.from_pylist(rows, schema=self.schema)
        # The actor's time less the decoding it did (that is counted under decode_ms).
        decoding_ms = sum(reply.decode_ms for reply in replies.values())
        return replace_columns(table, {"detect_ms": split_ms((time.perf_counter() - started) * 1000 - decoding_ms, len(rows))})


def _groups(table: pa.Table, column: str, spec: CropSpec) -> list[np.ndarray]:
    """Each row's crops, (0 or 1, H, W, 3)."""
    width, height = spec.size
    return [
        np.zeros((0, height, width, 3), np.uint8) if data is None else np.frombuffer(data, np.uint8).reshape(-1, height, width, 3)
        for data in table.column(column).to_pylist()
    ]


class EmbedStage:
    """Embeddings of the face rows' recognizer crops, one session call per batch."""

    def __init__(self, spec: ModelSpec, cache_dir: Path):
        self.loaded = load_stage(spec, "recognizer", cache_dir, assigned_resources())
        self.model = answered_by(self.loaded)
        self.space = embedding_space(self.loaded)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        groups = _groups(batch, CROP_COLUMNS["recognizer"], self.loaded.adapter.crop_spec)
        vectors = embed_batch(self.loaded.adapter, groups)
        faces = [len(g) > 0 for g in groups]
        return replace_columns(
            batch.drop_columns([CROP_COLUMNS["recognizer"]]),
            {
                "embedding": [v[0].tolist() if face else None for v, face in zip(vectors, faces)],
                "embedding_space": [self.space.key if face else None for face in faces],
                "recognizer_model": [self.model if face else None for face in faces],
                "recognizer_ms": split_ms((time.perf_counter() - started) * 1000, batch.num_rows),
            },
        )


class ClassifyStage:
    """Deepfake verdicts of the face rows' classifier crops, one session call per batch."""

    def __init__(self, spec: ModelSpec, cache_dir: Path):
        self.loaded = load_stage(spec, "deepfake", cache_dir, assigned_resources())
        self.model = answered_by(self.loaded)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        verdicts = classify_batch(self.loaded.adapter, _groups(batch, CROP_COLUMNS["deepfake"], self.loaded.adapter.crop_spec))
        return replace_columns(
            batch.drop_columns([CROP_COLUMNS["deepfake"]]),
            {
                "fake_probability": [v[0].fake_probability if v else None for v in verdicts],
                "deepfake_label": [v[0].label if v else None for v in verdicts],
                "deepfake_model": [self.model if v else None for v in verdicts],
                "deepfake_ms": split_ms((time.perf_counter() - started) * 1000, batch.num_rows),
            },
        )
