"""Which store a Gallery replica opens, and where its identify searches run."""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from facegraph.graph.core.wire import SearchAnswer, SearchRequest
from facegraph.graph.config import StoreSettings
from facegraph.graph.identity.index import search_batch
from facegraph.graph.identity.store import GalleryStore, Store
DatabaseSearch = Callable[[Sequence[SearchRequest]], list[SearchAnswer]]


def open_store(settings: StoreSettings) -> Store:
    """The SQLite file or the PostgreSQL server that ``settings`` name (schema created or migrated)."""
    if settings.backend == "postgres":
        from facegraph.graph.identity.postgres import PostgresStore

        return PostgresStore(settings.dsn.get_secret_value(), settings.index.pgvector)
    return GalleryStore(settings.database)


def database_search(store: Store) -> DatabaseSearch | None:
    """A store that searches itself (PostgreSQL); None where the replica keeps its own index (SQLite)."""
    from facegraph.graph.identity import postgres

    if isinstance(store, postgres.PostgresStore):
        return partial(search_batch, store.space_index)
    return None
