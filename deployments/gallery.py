"""Gallery deployment: the subjects database and identity search, batched across requests."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from functools import partial

import numpy as np
from ray import serve

from facegraph.deployments.base import apply_batching, batch_metrics, in_batches
from facegraph.graph.core.wire import SearchAnswer, SearchRequest
from facegraph.graph.config import Batching, StoreSettings
from facegraph.graph.identity.backends import database_search, open_store
from facegraph.graph.identity.index import GalleryIndex, search_batch
from facegraph.graph.identity.store import GalleryError
from facegraph.graph.process import rss_mb
from facegraph.models.embedding import Match, Metric, distances, is_match, similarities

logger = logging.getLogger(__name__)


@serve.deployment
class Gallery:
    """Every replica reads the same store: a SQLite file its index follows before each search, or a
    PostgreSQL server that answers the searches itself."""

    def __init__(self, store: StoreSettings):
        self.store = open_store(store)
        self.approximate = store.index.faiss
        self.indexes: dict[str, GalleryIndex] = {}
        # PostgreSQL searches in the database (None for SQLite: this replica's own index does).
        self.in_database = database_search(self.store)
        self.m_batch, self.m_latency = batch_metrics("gallery")
        # The batch knobs Serve's ``reconfigure`` gives (the config's ``batching``); the config's defaults until then.
        self.batching = Batching()
        logger.info("gallery replica opened its database")

    def reconfigure(self, user_config: dict) -> None:
        self.batching = apply_batching(self.search_faces, user_config)

    def _index(self, space: str, metric: Metric) -> GalleryIndex:
        index = self.indexes.get(space)
        if index is None:
            index = self.indexes[space] = GalleryIndex(self.store, space, metric, self.approximate)
        index.refresh()
        return index

    # Writes: the store serialises them in SQLite transactions.
    async def create_subject(self, name: str, metadata: dict) -> dict:
        return await asyncio.to_thread(self.store.create_subject, name, metadata)

    async def get_subject(self, subject_id: str) -> dict:
        return await asyncio.to_thread(self.store.get_subject, subject_id)

    async def list_subjects(self, limit: int, offset: int) -> dict:
        return await asyncio.to_thread(self.store.list_subjects, limit, offset)

    async def delete_subject(self, subject_id: str) -> int:
        return await asyncio.to_thread(self.store.delete_subject, subject_id)

    async def add_face(self, subject_id: str, embedding: np.ndarray, space: str) -> int:
        return await asyncio.to_thread(self.store.add_face, subject_id, embedding, space)

    async def compare_subject(self, embedding: np.ndarray, subject_id: str, space: str, metric: Metric, threshold: float) -> Match:
        """The subject's closest face in this space to ``embedding``."""

        def best() -> Match:
            subject = self.store.get_subject(subject_id)
            faces = self.store.subject_faces(subject_id, space)
            if not len(faces):
                others = ", ".join(sorted(subject["faces_by_space"])) or "none"
                raise GalleryError(
                    f"subject has no face enrolled with the current recognizer ({space}); enrolled with: {others}. Enroll again.",
                    "embedding_space_mismatch",
                )
            found = distances(faces, embedding[None], metric)
            i = int(np.argmin(found))
            distance, similarity = float(found[i]), float(similarities(faces[i], embedding))
            return Match(subject_id, subject["name"], distance, similarity, bool(is_match(distance, metric, threshold)))

        return await asyncio.to_thread(best)

    async def search(self, request: SearchRequest) -> SearchAnswer:
        """Per face of one picture (any number of faces): the top-k subjects, closest first, and the decision used."""
        if not len(request.embeddings):
            (answer,) = await asyncio.to_thread(search_batch, self._index, [request])
            return answer
        parts = await in_batches(self.search_faces, request.embeddings, self.batching.max_batch_size, lambda rows: replace(request, embeddings=rows))
        return SearchAnswer([row for part in parts for row in part.faces], parts[0].decision)

    # A batch is capped by faces: ``search`` cuts a picture's faces into pieces that fit.
    @serve.batch(batch_size_fn=lambda requests: sum(len(r.embeddings) for r in requests))
    async def search_faces(self, requests: list[SearchRequest]) -> list[SearchAnswer]:
        """Per request, per face: the top-k subjects. One matrix product per space and batch."""
        started = time.perf_counter()
        out = await asyncio.to_thread(self.in_database or partial(search_batch, self._index), requests)
        self.m_batch.observe(sum(len(r.embeddings) for r in requests))
        self.m_latency.observe((time.perf_counter() - started) * 1000)
        return out

    async def stats(self, space: str, metric: Metric) -> dict:
        """Subjects, faces searchable in ``space`` and faces enrolled with other recognizers."""

        def count() -> dict:
            counts = self.store.space_counts()
            if self.in_database:
                faces, search = counts.get(space, 0), self.store.search_kind(space, metric)
            else:
                index = self._index(space, metric)
                faces, search = len(index), "approximate (FAISS IVF-Flat)" if index.approximate_active else "exact"
            return {
                "subjects": self.store.subject_count(),
                "faces": faces,
                "search": search,
                "faces_other_spaces": sum(n for s, n in counts.items() if s != space),
                "rss_mb": rss_mb(),
            }

        return await asyncio.to_thread(count)

    def check_health(self) -> None:
        self.store.state()
