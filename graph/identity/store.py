"""The identity gallery's durable store: subjects and their face embeddings in one SQLite file.

No Ray here. ``GalleryStore`` is the one place that writes; readers (``graph.identity.index``) follow it
through :meth:`GalleryStore.state`, so any number of them over the same file see every committed write.
:class:`Store` is the interface a second backend implements.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from facegraph.models.errors import FacegraphError

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
# Subjects per page of a listing (the HTTP query and the handle API refuse more).
MAX_PAGE = 1000


class GalleryError(FacegraphError):
    """A gallery request that cannot be met (unknown subject, wrong embedding space...)."""



class Store(Protocol):
    """What the gallery deployment and the index need from a store of subjects and embeddings.

    ``state()`` is (generation, erasures): it changes on every write, and ``erasures`` on every
    erasure, so a reader knows whether to append or rebuild.
    """

    def create_subject(self, name: str, metadata: dict[str, Any] | None = None) -> dict: ...
    def get_subject(self, subject_id: str) -> dict: ...
    def list_subjects(self, limit: int = 100, offset: int = 0) -> dict: ...
    def delete_subject(self, subject_id: str) -> int: ...
    def subject_count(self) -> int: ...
    def add_face(self, subject_id: str, embedding: np.ndarray, space: str) -> int: ...
    # Bulk writes (``facegraph batch --enroll-by-folder``): each call one transaction.
    def create_subjects(self, names: list[str]) -> list[str]: ...
    def add_faces(self, rows: list[tuple[str, np.ndarray]], space: str) -> None: ...
    def subject_faces(self, subject_id: str, space: str) -> np.ndarray: ...
    def count_after(self, space: str, after_id: int) -> int: ...
    def dimension(self, space: str) -> int: ...
    def iter_faces_after(self, space: str, after_id: int, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]: ...
    def names(self, subject_ids: list[str]) -> dict[str, str]: ...
    def state(self) -> tuple[int, int]: ...
    def space_counts(self) -> dict[str, int]: ...


def _subject_json(row: sqlite3.Row, counts: dict[str, int]) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "metadata": json.loads(row["metadata"]),
        "created_at": row["created_at"],
        "faces": sum(counts.values()),
        "faces_by_space": counts,
    }



def erase_subject(execute, subject_id: str, mark: str, lock: str, count_erasure: str) -> int:
    """Delete a subject's faces and row inside the caller's transaction, and count the erasure; returns faces erased.

    ``execute`` is the connection's; ``mark`` its placeholder, ``lock`` what locks the row
    (PostgreSQL's ``FOR UPDATE``), ``count_erasure`` the statement that bumps the store's erasure
    counter, which other replicas follow.
    """
    if execute(f"SELECT 1 FROM subjects WHERE id = {mark}{lock}", (subject_id,)).fetchone() is None:
        raise GalleryError(NO_SUBJECT, "not_found")
    faces = execute(f"DELETE FROM faces WHERE subject_id = {mark}", (subject_id,)).rowcount
    execute(f"DELETE FROM subjects WHERE id = {mark}", (subject_id,))
    execute(count_erasure)
    return faces


class SqlSubjects:
    """The subject reads both SQL stores answer alike, over their own ``_rows`` (rows by column name; ``%s`` placeholders)."""

    def _rows(self, sql: str, args: tuple = ()) -> list: ...

    def _face_counts(self, subject_ids: list[str]) -> dict[str, dict[str, int]]: ...

    def get_subject(self, subject_id: str) -> dict:
        rows = self._rows("SELECT * FROM subjects WHERE id = %s", (subject_id,))
        if not rows:
            raise GalleryError(NO_SUBJECT, "not_found")
        return _subject_json(rows[0], self._face_counts([subject_id])[subject_id])

    def subject_count(self) -> int:
        return self._rows("SELECT COUNT(*) AS n FROM subjects")[0]["n"]

    def list_subjects(self, limit: int = 100, offset: int = 0) -> dict:
        rows = self._rows("SELECT * FROM subjects ORDER BY created_at, id LIMIT %s OFFSET %s", (limit, offset))
        total = self.subject_count()
        counts = self._face_counts([r["id"] for r in rows])
        return {"total": total, "limit": limit, "offset": offset, "subjects": [_subject_json(r, counts[r["id"]]) for r in rows]}


class GalleryStore(SqlSubjects):
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

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._read(sql.replace("%s", "?"), args)

    def delete_subject(self, subject_id: str) -> int:
        """Erase a subject and every embedding of it, from the file and its log; returns faces erased."""

        erased = self._write(lambda db: erase_subject(db.execute, subject_id, "?", "", "UPDATE meta SET value = value + 1 WHERE key = 'erasures'"))
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
