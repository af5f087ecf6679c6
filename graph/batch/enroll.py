"""``facegraph batch --enroll-by-folder``: each folder a subject, each one-face picture one of its faces.

Writes go through the gallery's :class:`~graph.identity.store.Store` in bulk: per batch of rows, one
``create_subjects`` for folder names the gallery does not hold yet and one ``add_faces`` per
embedding space. A running service's gallery replicas follow the store's state, so they search
the new faces at their next request, without a restart.
"""

from __future__ import annotations

import posixpath
import time

import numpy as np
import pyarrow as pa

from facegraph.graph.batch.rows import replace_columns, split_ms
from facegraph.graph.config import FacegraphConfig
from facegraph.graph.core.identities import below_eye_floor
from facegraph.graph.identity.backends import open_store
from facegraph.graph.identity.store import Store
from facegraph.models.types import eye_distance

PAGE = 1000


def subject_of(path: str) -> str:
    """The subject a picture enrolls: the name of its folder."""
    return posixpath.basename(posixpath.dirname(path))


def subjects_by_name(store: Store) -> dict[str, str]:
    """Name -> id of the gallery's subjects; where names repeat, the oldest subject."""
    found: dict[str, str] = {}
    offset = 0
    while True:
        page = store.list_subjects(limit=PAGE, offset=offset)
        for subject in page["subjects"]:
            found.setdefault(subject["name"], subject["id"])
        offset += len(page["subjects"])
        if not page["subjects"] or offset >= page["total"]:
            return found


def enroll_status(row: dict, min_eye_distance_px: float | None = None) -> str:
    """What enrolling the row's picture does; faces under the service's eye-distance floor are refused as it refuses them."""
    if row["status"] != "face":
        return row["status"]  # "no_face" or "error"
    if row["faces"] != 1 or row["embedding"] is None:
        return "several_faces"
    if below_eye_floor(eye_distance(row.get("landmarks"), row.get("landmark_names") or ()), min_eye_distance_px):
        return "low_quality"
    return "enrolled"


class EnrollStage:
    """The one writer of a job: a single actor, placed by the gallery's own resources (the node with its disk)."""

    def __init__(self, config: FacegraphConfig):
        store = config.gallery_store()
        if store is None:
            raise ValueError("enrolling needs a gallery and a recognizer in the config")
        self.store = open_store(store)
        self.min_eye_distance_px = config.gallery.min_eye_distance_px if config.gallery else None
        self.subjects = subjects_by_name(self.store)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        rows = batch.select(["path", "status", "faces", "embedding", "embedding_space", "landmarks", "landmark_names"]).to_pylist()
        names = [subject_of(row["path"]) for row in rows]
        statuses = [enroll_status(row, self.min_eye_distance_px) for row in rows]
        new = sorted({name for name, status in zip(names, statuses) if status == "enrolled" and name not in self.subjects})
        if new:
            self.subjects.update(zip(new, self.store.create_subjects(new)))
        by_space: dict[str, list] = {}
        for row, name, status in zip(rows, names, statuses):
            if status == "enrolled":
                by_space.setdefault(row["embedding_space"], []).append((self.subjects[name], np.asarray(row["embedding"], np.float32)))
        for space, faces in by_space.items():
            self.store.add_faces(faces, space)
        return replace_columns(
            batch,
            {
                "subject": names,
                "subject_id": [self.subjects[n] if s == "enrolled" else None for n, s in zip(names, statuses)],
                "enroll_status": statuses,
                "enroll_ms": split_ms((time.perf_counter() - started) * 1000, len(rows)),
            },
        )
