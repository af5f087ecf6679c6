"""Exact nearest-subject search in memory over one embedding space of a gallery store.

``GalleryIndex`` is a contiguous matrix of one space's faces that follows the store
(incrementally after enrolls, rebuilt after erasures). ``search_batch`` answers several
requests' faces with one matrix product per space.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from deployments.wire import SearchRequest
from graph.identity.store import GalleryError, Store
from models.embedding import Match, Metric, is_match


class GalleryIndex:
    """Exact nearest-subject search over one embedding space, following a gallery ``Store``.

    Rows live in one contiguous float32 buffer that grows by doubling, so an enroll appends
    without copying the gallery and a search reads a consistent prefix of it.
    """

    def __init__(self, store: Store, space: str, metric: Metric):
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


def search_batch(index_for: Callable[[str, Metric], GalleryIndex], requests: Sequence[SearchRequest]) -> list[list[list[Match]]]:
    """Per request, per face: its top-k subjects. One matrix product per embedding space in the batch.

    ``index_for(space, metric)`` gives the (refreshed) index of a space.
    """
    results: list[list[list[Match]]] = [[] for _ in requests]
    for space in {r.space for r in requests}:
        members = [i for i, r in enumerate(requests) if r.space == space and len(r.embeddings)]
        if not members:
            continue
        index = index_for(space, requests[members[0]].metric)
        queries = np.concatenate([requests[i].embeddings for i in members])
        found = index.search(queries, max(requests[i].top_k for i in members), threshold=0.0)
        start = 0
        for i in members:
            request = requests[i]
            rows = found[start : start + len(request.embeddings)]
            start += len(request.embeddings)
            results[i] = [
                [Match(m.subject_id, m.name, m.distance, m.similarity, bool(is_match(m.distance, request.metric, request.threshold))) for m in row[: request.top_k]]
                for row in rows
            ]
    return results
