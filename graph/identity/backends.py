"""Which store a Gallery replica opens, and where its identify searches run."""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from graph.core.wire import SearchAnswer, SearchRequest
from graph.config import StoreSettings
from graph.identity.index import search_batch
from graph.identity.store import GalleryStore, Store
DatabaseSearch = Callable[[Sequence[SearchRequest]], list[SearchAnswer]]


def open_store(settings: StoreSettings) -> Store:
    """The SQLite file or the PostgreSQL server that ``settings`` name (schema created or migrated)."""
    if settings.backend == "postgres":
        from graph.identity.postgres import PostgresStore

        return PostgresStore(settings.dsn.get_secret_value(), settings.index.pgvector)
    return GalleryStore(settings.database)


def database_search(store: Store) -> DatabaseSearch | None:
    """A store that searches itself (PostgreSQL); None where the replica keeps its own index (SQLite)."""
    from graph.identity import postgres

    if isinstance(store, postgres.PostgresStore):
        return partial(search_batch, store.space_index)
    return None
