"""Nearest-subject search in memory over one embedding space of a gallery store.

``GalleryIndex`` is a contiguous matrix of one space's faces that follows the store
(incrementally after enrolls, rebuilt after erasures); exact below ``FaissConfig.above_faces``
faces, through an IVF-Flat layer (``graph.identity.ann``) above. ``search_batch`` answers several
requests' faces with one matrix product (or one FAISS search) per space.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

import numpy as np

from facegraph.graph.core.wire import SearchAnswer, SearchRequest
from facegraph.graph.identity.ann import FaissConfig, IvfLayer, lists_for
from facegraph.graph.identity.store import GalleryError, Store
from facegraph.models.embedding import ImpostorModel, Match, Metric, identification_decision, is_match

logger = logging.getLogger(__name__)

# A gallery measures its own impostor distances once it holds this many subjects in a space.
MIN_IMPOSTOR_SUBJECTS = 20
# Random pairs of faces of different subjects it measures (at most; fewer in a small gallery).
IMPOSTOR_PAIRS = 20_000


class GalleryIndex:
    """Exact nearest-subject search over one embedding space, following a gallery ``Store``.

    Rows live in one contiguous float32 buffer that grows by doubling, so an enroll appends
    without copying the gallery and a search reads a consistent prefix of it.
    """

    def __init__(self, store: Store, space: str, metric: Metric, approximate: FaissConfig | None = None):
        self.store, self.space, self.metric = store, space, metric
        self.approximate = approximate
        self._ann: IvfLayer | None = None  # serving: holds exactly the rows of the buffer
        self._trained: IvfLayer | None = None  # the last training, reused after erasures
        self._job: threading.Thread | None = None
        self._generation = 0  # bumped by every rebuild: rows of an older generation are stale
        self.trainings = 0
        self._lock = threading.Lock()
        self._state: tuple[int, int] | None = None
        self._impostors: tuple[tuple[int, int] | None, ImpostorModel | None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._buffer = np.zeros((0, 0), np.float32)
        self._sq_norms = np.zeros(0, np.float32)
        self._codes = np.zeros(0, np.int32)
        self._generation += 1
        self._ann = None  # exact until the background job has re-added the rows
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
            self._follow_ann()
            self._state = state

    def _follow_ann(self) -> None:
        """Keep the IVF layer in step (called under the lock): new rows go straight in; training and
        re-filling run in a background job, and searches stay exact until it is done."""
        config, n = self.approximate, self._n
        if config is None or config.above_faces is None or n < config.above_faces:
            self._ann = None
            return
        retrain = self._trained is None or n > 8 * self._trained.trained_for
        if self._ann is not None and not retrain:
            if len(self._ann) < n:
                self._ann.add(self._buffer[len(self._ann) : n])
            return
        if self._job is None:
            self._job = threading.Thread(target=self._build, args=(retrain,), name="gallery-ivf", daemon=True)
            self._job.start()

    def _build(self, retrain: bool) -> None:
        """Train (or reuse the training), add every row unlocked, then the few that came meanwhile under the lock."""
        try:
            if retrain:
                with self._lock:
                    n, dimension = self._n, self._buffer.shape[1]
                    take = min(n, (self.approximate.nlist or lists_for(n)) * self.approximate.train_per_list)
                    sample = self._buffer[np.sort(np.random.default_rng(0).choice(n, take, replace=False))]
                layer = IvfLayer.trained(self.approximate, self.metric, dimension, n, sample)
                self.trainings += 1
            else:
                layer = self._trained.empty()
            while True:
                with self._lock:
                    generation, rows, n = self._generation, self._buffer, self._n
                layer = layer.empty() if len(layer) else layer
                layer.add(rows[:n])  # rows below n never change within a generation
                with self._lock:
                    if generation == self._generation:
                        if len(layer) < self._n:
                            layer.add(self._buffer[len(layer) : self._n])
                        self._ann = self._trained = layer
                        return
        except Exception:
            logger.exception("approximate index build failed; searches stay exact")
        finally:
            with self._lock:
                self._job = None

    def wait_approximate(self, timeout: float | None = None) -> bool:
        """Wait for a background build (tests, benchmarks); True when the approximate layer serves."""
        job = self._job
        if job is not None:
            job.join(timeout)
        return self._ann is not None

    @property
    def approximate_active(self) -> bool:
        return self._ann is not None

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
            ann = self._ann if self._ann is not None and len(self._ann) == n else None
        queries = np.asarray(queries, np.float32).reshape(len(queries), -1)
        if n == 0 or len(queries) == 0:
            return [[] for _ in queries]
        if queries.shape[1] != matrix.shape[1]:
            raise GalleryError(f"embedding length {queries.shape[1]} does not match the gallery's {matrix.shape[1]}", "embedding_space_mismatch")
        matrix, sq, codes = matrix[:n], sq[:n], codes[:n]
        q_norms = np.linalg.norm(queries, axis=1)
        if self.metric == "cosine":
            queries = queries / np.maximum(q_norms, 1e-12)[:, None]

        def keys(q: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
            """A ranking key per (query, face) that orders like the distance: euclidean
            |m|^2 - 2 q.m (|q|^2 is the same for every face), cosine -q.m."""
            m, s2 = (matrix, sq) if rows is None else (matrix[rows], sq[rows])
            key = q @ m.T
            if self.metric == "cosine":
                np.negative(key, out=key)
            else:
                key *= -2.0
                key += s2
            return key

        if ann is None:
            key = keys(queries)
            ranked = [(np.asarray(self._best_subjects(key[row], codes, k), np.int64), key[row]) for row in range(len(queries))]
        else:
            ranked = self._ann_ranked(ann, queries, keys, codes, k, n)
        out = []
        for row, (picks, row_key) in enumerate(ranked):
            values = row_key[picks].astype(np.float64) if ann is None else row_key.astype(np.float64)
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

    def _ann_ranked(self, ann: IvfLayer, queries: np.ndarray, keys, codes: np.ndarray, k: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: the closest face of each of the ``k`` closest subjects among the IVF candidates, and their keys.

        Over-fetches (a subject may hold many faces) and looks further where the candidates hold too few subjects.
        """
        width = min(n, max(4 * k, 32))
        found = ann.candidates(queries, width)
        out = []
        for row in range(len(queries)):
            rows, w = found[row], width
            while True:
                rows = rows[rows >= 0]
                key = keys(queries[row : row + 1], rows)[0]
                order = np.argsort(key, kind="stable")
                picks, seen = [], set()
                for i in order:
                    code = int(codes[rows[i]])
                    if code not in seen:
                        seen.add(code)
                        picks.append(int(i))
                        if len(picks) == k:
                            break
                if len(picks) == k or w >= n:
                    break
                w = min(n, w * 4)
                rows = ann.candidates(queries[row : row + 1], w)[0]
            picks_arr = np.asarray(picks, np.int64)
            out.append((rows[picks_arr], key[picks_arr]))
        return out

    def impostors(self) -> ImpostorModel | None:
        """Distances between faces of different subjects, sampled from this space (None below ``MIN_IMPOSTOR_SUBJECTS``).

        Measured again after every write: a random sample of pairs (seeded, so one state always gives one answer).
        """
        with self._lock:
            state, n, matrix, codes, subjects = self._state, self._n, self._buffer, self._codes, len(self._subjects)
            if self._impostors is not None and self._impostors[0] == state:
                return self._impostors[1]
        model = sample_impostors(matrix[:n], codes[:n], self.metric) if subjects >= MIN_IMPOSTOR_SUBJECTS else None
        with self._lock:
            self._impostors = (state, model)
        return model

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


def sample_impostors(matrix: np.ndarray, codes: np.ndarray, metric: Metric, pairs: int = IMPOSTOR_PAIRS, seed: int = 0) -> ImpostorModel | None:
    """Distances of random pairs of rows whose subject ``codes`` differ (rows unit-norm for cosine)."""
    n = len(matrix)
    if n < 2 or len(np.unique(codes)) < MIN_IMPOSTOR_SUBJECTS:
        return None
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    keep = codes[a] != codes[b]
    a, b = a[keep], b[keep]
    if metric == "cosine":
        found = 1.0 - np.einsum("ij,ij->i", matrix[a], matrix[b]).astype(np.float64)
    else:
        found = np.linalg.norm(matrix[a].astype(np.float64) - matrix[b], axis=1)
    found.sort()
    return ImpostorModel(float(found.mean()), float(found.std()), len(found), "gallery", tuple(found.tolist()))


def search_batch(index_for: Callable[[str, Metric], GalleryIndex], requests: Sequence[SearchRequest]) -> list[SearchAnswer]:
    """Per request: per face its top-k subjects, and the decision that set their ``match``.

    ``index_for(space, metric)`` gives the (refreshed) index of a space. One matrix product per
    embedding space in the batch; each request's threshold follows its own false-match rate.
    """
    results: list[SearchAnswer | None] = [None] * len(requests)
    for space in {r.space for r in requests}:
        group = [i for i, r in enumerate(requests) if r.space == space]
        index = index_for(space, requests[group[0]].metric)
        members = [i for i in group if len(requests[i].embeddings)]
        found = []
        if members:
            queries = np.concatenate([requests[i].embeddings for i in members])
            found = index.search(queries, max(requests[i].top_k for i in members), threshold=0.0)
        own = index.impostors() if any(requests[i].false_match_rate is not None for i in group) else None
        start = 0
        for i in group:
            request = requests[i]
            decision = identification_decision(request.metric, request.threshold, request.false_match_rate, len(index), own or request.impostors)
            rows = found[start : start + len(request.embeddings)] if i in members else []
            start += len(request.embeddings) if i in members else 0
            faces = [
                [Match(m.subject_id, m.name, m.distance, m.similarity, bool(is_match(m.distance, request.metric, decision.threshold))) for m in row[: request.top_k]]
                for row in rows
            ]
            results[i] = SearchAnswer(faces, decision)
    return results  # type: ignore[return-value]
