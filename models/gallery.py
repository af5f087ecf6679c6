"""The identity gallery: subjects and their face embeddings in SQLite, searched exactly in memory.

No Ray here. ``GalleryStore`` is the one place that writes; ``GalleryIndex`` is a contiguous
matrix of one embedding space's faces that follows the store (incrementally after enrolls,
rebuilt after erasures), so any number of readers over the same file see every committed write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.errors import FacegraphError

Metric = Literal["euclidean", "cosine"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    space TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_by_space ON faces(space, id);
CREATE INDEX IF NOT EXISTS faces_by_subject ON faces(subject_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0), ('erasures', 0);
"""


# Never the id itself: refusals must not echo what a client sent (it would reach the replica log).
NO_SUBJECT = "no subject with that id"
MAX_OFFSET = 2**31 - 1


class GalleryError(FacegraphError):
    """A gallery request that cannot be met (unknown subject, wrong embedding space...)."""


@dataclass(frozen=True)
class EmbeddingSpace:
    """Which model made an embedding: only embeddings of one space are ever compared.

    Attributes:
        family: recognizer family.
        digest: first 16 hex digits of the sha256 of the model's ONNX file(s).
        variant: fp32, fp16, int8...
        dimension: embedding length.
        metric: ``euclidean`` (distance) or ``cosine`` (similarity) decides a match.
    """

    family: str
    digest: str
    variant: str
    dimension: int
    metric: Metric

    @property
    def key(self) -> str:
        return f"{self.family}:{self.digest}:{self.variant}"


@dataclass(frozen=True)
class Match:
    """One candidate subject for a face: its closest enrolled face.

    ``distance`` is Euclidean for euclidean spaces and 1 - cosine for cosine spaces;
    ``similarity`` is always the cosine of the two embeddings.
    """

    subject_id: str
    name: str
    distance: float
    similarity: float
    match: bool

    def to_json(self) -> dict:
        return {
            "subject_id": self.subject_id,
            "name": self.name,
            "distance": round(self.distance, 6),
            "similarity": round(self.similarity, 6),
            "match": self.match,
        }


def is_match(distance: float, metric: Metric, threshold: float) -> bool:
    """Euclidean: distance below the threshold; cosine: similarity (1 - distance) at or above it."""
    return distance < threshold if metric == "euclidean" else 1.0 - distance >= threshold


def compare(a: np.ndarray, b: np.ndarray, metric: Metric) -> tuple[float, float]:
    """(distance, cosine similarity) of two embeddings, distance as in ``Match``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    distance = float(np.linalg.norm(a - b)) if metric == "euclidean" else 1.0 - cosine
    return distance, cosine


def _subject_json(row: sqlite3.Row, counts: dict[str, int]) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "metadata": json.loads(row["metadata"]),
        "created_at": row["created_at"],
        "faces": sum(counts.values()),
        "faces_by_space": counts,
    }


class GalleryStore:
    """Subjects and embeddings in one SQLite file (WAL, one writer at a time, durable commits).

    Deleted rows are overwritten in place (``secure_delete``) and the write-ahead log is
    checkpointed and truncated after an erasure, so an erased embedding is gone from disk.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "secure_delete=ON", "busy_timeout=30000"):
            self._db.execute(f"PRAGMA {pragma}")
        with self._lock:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, fn):
        """Run ``fn(cursor)`` in one immediate transaction that also bumps the generation."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return result

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- subjects ---------------------------------------------------------------------------

    def create_subject(self, name: str, metadata: dict[str, Any] | None = None) -> dict:
        subject_id = uuid.uuid4().hex
        record = (subject_id, name, json.dumps(metadata or {}, separators=(",", ":")), round(time.time(), 3))
        self._write(lambda db: db.execute("INSERT INTO subjects VALUES (?, ?, ?, ?)", record))
        return self.get_subject(subject_id)

    def _face_counts(self, subject_ids: list[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {s: {} for s in subject_ids}
        if not subject_ids:
            return counts
        marks = ",".join("?" * len(subject_ids))
        sql = f"SELECT subject_id, space, COUNT(*) AS n FROM faces WHERE subject_id IN ({marks}) GROUP BY subject_id, space"
        for row in self._read(sql, tuple(subject_ids)):
            counts[row["subject_id"]][row["space"]] = row["n"]
        return counts

    def get_subject(self, subject_id: str) -> dict:
        rows = self._read("SELECT * FROM subjects WHERE id = ?", (subject_id,))
        if not rows:
            raise GalleryError(NO_SUBJECT, "not_found")
        return _subject_json(rows[0], self._face_counts([subject_id])[subject_id])

    def subject_count(self) -> int:
        return self._read("SELECT COUNT(*) AS n FROM subjects")[0]["n"]

    def list_subjects(self, limit: int = 100, offset: int = 0) -> dict:
        rows = self._read("SELECT * FROM subjects ORDER BY created_at, id LIMIT ? OFFSET ?", (limit, offset))
        total = self.subject_count()
        counts = self._face_counts([r["id"] for r in rows])
        return {"total": total, "limit": limit, "offset": offset, "subjects": [_subject_json(r, counts[r["id"]]) for r in rows]}

    def delete_subject(self, subject_id: str) -> int:
        """Erase a subject and every embedding of it, from the file and its log; returns faces erased."""

        def erase(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone() is None:
                raise GalleryError(NO_SUBJECT, "not_found")
            faces = db.execute("DELETE FROM faces WHERE subject_id = ?", (subject_id,)).rowcount
            db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'erasures'")
            return faces

        erased = self._write(erase)
        self._truncate_log()
        return erased

    def _truncate_log(self) -> None:
        """Copy the log into the file (where secure_delete zeroed the rows) and empty it."""
        for _ in range(50):
            with self._lock:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.02)  # a reader holds an old snapshot; it lets go within a query
        raise GalleryError("the gallery log could not be truncated: readers kept it busy", "unavailable")

    # ---- faces ------------------------------------------------------------------------------

    def add_face(self, subject_id: str, embedding: np.ndarray, space: str) -> int:
        vector = np.ascontiguousarray(embedding, np.float32).reshape(-1)

        def insert(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone() is None:
                raise GalleryError(NO_SUBJECT, "not_found")
            cursor = db.execute(
                "INSERT INTO faces (subject_id, space, dimension, embedding, created_at) VALUES (?, ?, ?, ?, ?)",
                (subject_id, space, vector.size, vector.tobytes(), round(time.time(), 3)),
            )
            return int(cursor.lastrowid)

        return self._write(insert)

    def add_faces(self, rows: list[tuple[str, np.ndarray]], space: str) -> None:
        """Bulk enroll (subject id, embedding) pairs in one transaction; subjects must exist."""
        now = round(time.time(), 3)
        records = [(s, space, int(e.size), np.ascontiguousarray(e, np.float32).tobytes(), now) for s, e in rows]
        self._write(lambda db: db.executemany("INSERT INTO faces (subject_id, space, dimension, embedding, created_at) VALUES (?, ?, ?, ?, ?)", records))

    def create_subjects(self, names: list[str]) -> list[str]:
        """Bulk create subjects without metadata; returns their ids."""
        now = round(time.time(), 3)
        records = [(uuid.uuid4().hex, name, "{}", now) for name in names]
        self._write(lambda db: db.executemany("INSERT INTO subjects VALUES (?, ?, ?, ?)", records))
        return [r[0] for r in records]

    def subject_faces(self, subject_id: str, space: str) -> np.ndarray:
        """(F, D) float32 embeddings of one subject in one space."""
        rows = self._read("SELECT dimension, embedding FROM faces WHERE subject_id = ? AND space = ? ORDER BY id", (subject_id, space))
        if not rows:
            return np.zeros((0, 0), np.float32)
        return np.stack([np.frombuffer(r["embedding"], np.float32) for r in rows])

    def count_after(self, space: str, after_id: int) -> int:
        return self._read("SELECT COUNT(*) AS n FROM faces WHERE space = ? AND id > ?", (space, after_id))[0]["n"]

    def dimension(self, space: str) -> int:
        rows = self._read("SELECT dimension FROM faces WHERE space = ? LIMIT 1", (space,))
        return rows[0]["dimension"] if rows else 0

    def iter_faces_after(self, space: str, after_id: int, chunk: int = 50_000):
        """Faces of a space with id above ``after_id``, in chunks: (ids, subject ids, (N, D) float32)."""
        while True:
            rows = self._read(
                "SELECT id, subject_id, embedding FROM faces WHERE space = ? AND id > ? ORDER BY id LIMIT ?", (space, after_id, chunk)
            )
            if not rows:
                return
            ids = np.fromiter((r["id"] for r in rows), np.int64, len(rows))
            matrix = np.frombuffer(b"".join(r["embedding"] for r in rows), np.float32).reshape(len(rows), -1)
            yield ids, [r["subject_id"] for r in rows], matrix
            after_id = int(ids[-1])

    def names(self, subject_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(subject_ids), 500):
            part = subject_ids[start : start + 500]
            rows = self._read(f"SELECT id, name FROM subjects WHERE id IN ({','.join('?' * len(part))})", tuple(part))
            out.update({r["id"]: r["name"] for r in rows})
        return out

    def state(self) -> tuple[int, int]:
        """(generation, erasures): a reader's cue to catch up, and to rebuild."""
        values = {r["key"]: r["value"] for r in self._read("SELECT key, value FROM meta")}
        return values["generation"], values["erasures"]

    def space_counts(self) -> dict[str, int]:
        return {r["space"]: r["n"] for r in self._read("SELECT space, COUNT(*) AS n FROM faces GROUP BY space")}


class GalleryIndex:
    """Exact nearest-subject search over one embedding space, following a ``GalleryStore``.

    Rows live in one contiguous float32 buffer that grows by doubling, so an enroll appends
    without copying the gallery and a search reads a consistent prefix of it.
    """

    def __init__(self, store: GalleryStore, space: str, metric: Metric):
        self.store, self.space, self.metric = store, space, metric
        self._lock = threading.Lock()
        self._state: tuple[int, int] | None = None
        self._reset()

    def _reset(self) -> None:
        self._buffer = np.zeros((0, 0), np.float32)
        self._sq_norms = np.zeros(0, np.float32)
        self._codes = np.zeros(0, np.int32)
        self._n = 0
        self._last_id = 0
        self._subjects: list[str] = []
        self._code_of: dict[str, int] = {}
        self._names: dict[str, str] = {}

    def __len__(self) -> int:
        return self._n

    def refresh(self) -> None:
        """Catch up with the store: append faces enrolled since, or rebuild after an erasure."""
        state = self.store.state()
        if state == self._state:
            return
        with self._lock:
            if self._state is None or state[1] != self._state[1]:
                self._reset()
            coming = self.store.count_after(self.space, self._last_id)
            if coming:
                self._reserve(self._n + coming)
                for ids, subjects, matrix in self.store.iter_faces_after(self.space, self._last_id):
                    self._append(ids, subjects, matrix)
            self._state = state

    def _reserve(self, rows: int, dimension: int | None = None) -> None:
        """Room for ``rows`` faces, with headroom so the enrolls that follow do not copy the gallery."""
        if rows <= len(self._buffer) and self._buffer.shape[1]:
            return
        dimension = dimension or self._buffer.shape[1] or self.store.dimension(self.space)
        capacity = max(rows + rows // 4, 2 * len(self._buffer), 1024)
        n = self._n
        buffer = np.zeros((capacity, dimension), np.float32)
        if n:
            buffer[:n] = self._buffer[:n]
        sq = np.zeros(capacity, np.float32)
        sq[:n] = self._sq_norms[:n]
        codes = np.zeros(capacity, np.int32)
        codes[:n] = self._codes[:n]
        self._buffer, self._sq_norms, self._codes = buffer, sq, codes

    def _append(self, ids: np.ndarray, subjects: list[str], matrix: np.ndarray) -> None:
        new = [s for s in dict.fromkeys(subjects) if s not in self._code_of]
        for s in new:
            self._code_of[s] = len(self._subjects)
            self._subjects.append(s)
        self._names.update(self.store.names(new))
        n, m = self._n, len(ids)
        self._reserve(n + m, matrix.shape[1])
        if self.metric == "cosine":
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.maximum(norms, 1e-12)
        self._buffer[n : n + m] = matrix
        self._sq_norms[n : n + m] = np.einsum("ij,ij->i", matrix, matrix)
        self._codes[n : n + m] = [self._code_of[s] for s in subjects]
        self._n, self._last_id = n + m, int(ids[-1])

    def search(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]:
        """Top-``k`` subjects per query row, closest first (one subject's best face each)."""
        with self._lock:  # a consistent snapshot; the arithmetic below runs unlocked
            n, matrix, sq, codes = self._n, self._buffer, self._sq_norms, self._codes
            subjects, names = self._subjects, self._names
        queries = np.asarray(queries, np.float32).reshape(len(queries), -1)
        if n == 0 or len(queries) == 0:
            return [[] for _ in queries]
        if queries.shape[1] != matrix.shape[1]:
            raise GalleryError(f"embedding length {queries.shape[1]} does not match the gallery's {matrix.shape[1]}", "embedding_space_mismatch")
        matrix, sq, codes = matrix[:n], sq[:n], codes[:n]
        q_norms = np.linalg.norm(queries, axis=1)
        # A ranking key per (query, face) that orders like the distance, computed in place:
        # euclidean |m|^2 - 2 q.m (the query's own |q|^2 is the same for every face); cosine -q.m.
        if self.metric == "cosine":
            key = (queries / np.maximum(q_norms, 1e-12)[:, None]) @ matrix.T
            np.negative(key, out=key)
        else:
            key = queries @ matrix.T
            key *= -2.0
            key += sq
        out = []
        for row in range(len(queries)):
            picks = np.asarray(self._best_subjects(key[row], codes, k), np.int64)
            values = key[row, picks].astype(np.float64)
            if self.metric == "cosine":
                cosines = -values
                distances = 1.0 - cosines
            else:
                distances = np.sqrt(np.maximum(values + float(q_norms[row]) ** 2, 0.0))
                dots = (sq[picks] - values) / 2.0
                cosines = dots / np.maximum(np.sqrt(sq[picks]) * q_norms[row], 1e-12)
            matches = []
            for i, d, c in zip(picks, distances, cosines):
                subject = subjects[codes[i]]
                matches.append(Match(subject, names.get(subject, ""), float(d), float(c), is_match(float(d), self.metric, threshold)))
            out.append(matches)
        return out

    @staticmethod
    def _best_subjects(distances: np.ndarray, codes: np.ndarray, k: int) -> list[int]:
        """Row indices of the closest face of each of the ``k`` closest subjects."""
        n = len(distances)
        width = min(n, max(4 * k, 32))
        while True:
            part = np.argpartition(distances, width - 1)[:width] if width < n else np.arange(n)
            order = part[np.argsort(distances[part], kind="stable")]
            seen: set[int] = set()
            picks = []
            for i in order:
                if codes[i] not in seen:
                    seen.add(int(codes[i]))
                    picks.append(int(i))
                    if len(picks) == k:
                        return picks
            if width >= n:
                return picks
            width = min(n, width * 4)  # many faces of few subjects: look further
