"""The identity gallery in PostgreSQL with pgvector: one server that Gallery replicas on every node share.

No Ray here. :class:`PostgresStore` implements :class:`graph.identity.store.Store` with the same JSON
shapes and refusals as the SQLite ``GalleryStore``; :meth:`PostgresStore.space_index` lets identify requests
be answered inside the database (exact scans for small spaces, pgvector's HNSW index for large ones), so a
replica holds no copy of the gallery. The connection string may hold a password: it is never
logged, and no error raised here carries it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import numpy as np

from facegraph.graph.config import PgvectorIndex
from facegraph.graph.identity.index import sample_impostors
from facegraph.graph.identity.store import NO_SUBJECT, GalleryError, SqlSubjects, erase_subject
from facegraph.models.embedding import ImpostorModel, Match, Metric, is_match

try:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql
    from psycopg.rows import dict_row
except ImportError:  # a serving install without the postgres extra
    psycopg = None

logger = logging.getLogger(__name__)

# Advisory lock keys (facegraph's class id, then what it guards).
_LOCKS = 0x66676C79
_WRITE, _MIGRATE, _BUILD = 1, 2, 3

# Each step runs once, in order, in its own transaction; ``facegraph_schema`` holds the last one applied.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE subjects (
            id text PRIMARY KEY,
            name text NOT NULL,
            metadata text NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE TABLE faces (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            subject_id text NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
            space text NOT NULL,
            dimension integer NOT NULL,
            embedding vector NOT NULL,
            created_at double precision NOT NULL,
            CHECK (vector_dims(embedding) = dimension)
        );
        -- Replicas' catch-up cues: bumped in every write (erasures: every erasure) under the write lock.
        CREATE SEQUENCE gallery_generation;
        CREATE SEQUENCE gallery_erasures;
        """,
    ),
    (
        2,
        """
        CREATE INDEX faces_by_space ON faces (space, id);
        CREATE INDEX faces_by_subject ON faces (subject_id);
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _require_driver() -> None:
    if psycopg is None:
        raise GalleryError("gallery.backend postgres needs the postgres extra: pip install 'facegraph[postgres]'", "unavailable")


def _unreachable(exc: Exception) -> GalleryError:
    # libpq's messages can quote parts of the connection string: only the kind of failure goes out.
    return GalleryError(f"the PostgreSQL gallery is unreachable ({type(exc).__name__}); check gallery.dsn", "unavailable")


def connect(dsn: str):
    """An autocommit connection with pgvector's types, or a GalleryError that does not quote ``dsn``."""
    _require_driver()
    try:
        conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None, connect_timeout=10)
    except (psycopg.Error, ValueError) as exc:
        raise _unreachable(exc) from None
    return conn


def migrate(conn, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to ``target`` (creating it in an empty database); returns the version found before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _MIGRATE))  # replicas start together
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION vector")
            except psycopg.errors.InsufficientPrivilege:
                raise GalleryError(
                    "the database lacks the pgvector extension and this role may not create it: run CREATE EXTENSION vector once as its owner",
                    "unavailable",
                ) from None
            except psycopg.errors.FeatureNotSupported:
                raise GalleryError("the PostgreSQL server has no pgvector extension installed", "unavailable") from None
        conn.execute("CREATE TABLE IF NOT EXISTS facegraph_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM facegraph_schema").fetchone()
        found = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise GalleryError(f"the gallery's schema is version {found}, newer than this facegraph's {SCHEMA_VERSION}: upgrade facegraph", "unavailable")
        for version, statements in MIGRATIONS:
            if found < version <= target:
                conn.execute(statements)
                logger.info("gallery schema migrated to version %d", version)
        if target > found:
            conn.execute("DELETE FROM facegraph_schema")
            conn.execute("INSERT INTO facegraph_schema VALUES (%s)", (target,))
    return found


def index_name(space: str, metric: Metric) -> str:
    """The HNSW index of one embedding space and metric (a space's name is too free-form for an identifier)."""
    return "faces_hnsw_" + hashlib.sha256(f"{space}\0{metric}".encode()).hexdigest()[:16]


class PostgresStore(SqlSubjects):
    """Subjects and embeddings in PostgreSQL (pgvector), one connection per store.

    Writes take one advisory lock for their transaction, so face ids commit in order (a reader that
    follows ``iter_faces_after`` never skips one) and ``state()`` never reports a write before it commits.
    """

    def __init__(self, dsn: str, index: PgvectorIndex | None = None):
        self._dsn = dsn
        self.settings = index or PgvectorIndex()
        self._lock = threading.Lock()
        self._conn = None
        self._building: set[str] = set()
        self._checked: dict[str, float] = {}
        self._ready: dict[str, bool] = {}
        self._spaces: dict[tuple[str, str], DatabaseSpace] = {}
        with self._lock:
            self._connection()

    def __repr__(self) -> str:
        return "PostgresStore(dsn=<secret>)"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = connect(self._dsn)
            try:
                migrate(conn)
                register_vector(conn)  # after the migration that may have created the extension
            except psycopg.OperationalError as exc:
                conn.close()
                raise _unreachable(exc) from None
            self._conn = conn
        return self._conn

    def _run(self, fn: Callable, write: bool = False):
        """``fn(conn)`` in one transaction (a write: under the write lock, bumping the generation)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    if write:
                        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _WRITE))
                    result = fn(conn)
                    if write:
                        conn.execute("SELECT nextval('gallery_generation')")
                return result
            except psycopg.errors.ForeignKeyViolation:
                raise GalleryError(NO_SUBJECT, "not_found") from None
            except psycopg.OperationalError as exc:
                conn.close()  # the next call reconnects
                raise _unreachable(exc) from None

    def _read(self, query, args: tuple = ()) -> list[tuple]:
        return self._run(lambda conn: conn.execute(query, args).fetchall())

    def _rows(self, query: str, args: tuple = ()) -> list[dict]:
        """Rows by column name, as the SQLite store's ``_subject_json`` reads them."""
        return self._run(lambda conn: conn.cursor(row_factory=dict_row).execute(query, args).fetchall())

    # ---- subjects ---------------------------------------------------------------------------

    def create_subject(self, name: str, metadata: dict[str, Any] | None = None) -> dict:
        subject_id = uuid.uuid4().hex
        record = (subject_id, name, json.dumps(metadata or {}, separators=(",", ":")), round(time.time(), 3))
        self._run(lambda conn: conn.execute("INSERT INTO subjects VALUES (%s, %s, %s, %s)", record), write=True)
        return self.get_subject(subject_id)

    def create_subjects(self, names: list[str]) -> list[str]:
        """Bulk create subjects without metadata (one transaction, COPY); returns their ids."""
        now = round(time.time(), 3)
        records = [(uuid.uuid4().hex, name, "{}", now) for name in names]

        def copy(conn) -> None:
            with conn.cursor().copy("COPY subjects (id, name, metadata, created_at) FROM STDIN") as out:
                for record in records:
                    out.write_row(record)

        self._run(copy, write=True)
        return [r[0] for r in records]

    def _face_counts(self, subject_ids: list[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {s: {} for s in subject_ids}
        if subject_ids:
            rows = self._read("SELECT subject_id, space, COUNT(*) FROM faces WHERE subject_id = ANY(%s) GROUP BY subject_id, space", (subject_ids,))
            for subject_id, space, n in rows:
                counts[subject_id][space] = n
        return counts

    def delete_subject(self, subject_id: str) -> int:
        """Erase a subject and every embedding of it from the tables; returns faces erased.

        The rows are gone for every query at commit; their bytes stay in the table's pages until
        VACUUM reclaims them, and in the WAL and any backup until those turn over (README).
        """

        return self._run(lambda conn: erase_subject(conn.execute, subject_id, "%s", " FOR UPDATE", "SELECT nextval('gallery_erasures')"), write=True)

    # ---- faces ------------------------------------------------------------------------------

    def add_face(self, subject_id: str, embedding: np.ndarray, space: str) -> int:
        vector = np.ascontiguousarray(embedding, np.float32).reshape(-1)

        def insert(conn) -> int:
            if conn.execute("SELECT 1 FROM subjects WHERE id = %s", (subject_id,)).fetchone() is None:
                raise GalleryError(NO_SUBJECT, "not_found")
            row = conn.execute(
                "INSERT INTO faces (subject_id, space, dimension, embedding, created_at) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (subject_id, space, vector.size, vector, round(time.time(), 3)),
            ).fetchone()
            return int(row[0])

        return self._run(insert, write=True)

    def add_faces(self, rows: list[tuple[str, np.ndarray]], space: str) -> None:
        """Bulk enroll (subject id, embedding) pairs in one transaction (binary COPY); subjects must exist."""
        now = round(time.time(), 3)

        def copy(conn) -> None:
            query = "COPY faces (subject_id, space, dimension, embedding, created_at) FROM STDIN WITH (FORMAT BINARY)"
            with conn.cursor().copy(query) as out:
                out.set_types(["text", "text", "int4", "vector", "float8"])
                for subject_id, embedding in rows:
                    vector = np.ascontiguousarray(embedding, np.float32).reshape(-1)
                    out.write_row((subject_id, space, vector.size, vector, now))

        self._run(copy, write=True)

    def subject_faces(self, subject_id: str, space: str) -> np.ndarray:
        """(F, D) float32 embeddings of one subject in one space."""
        rows = self._read("SELECT embedding FROM faces WHERE subject_id = %s AND space = %s ORDER BY id", (subject_id, space))
        if not rows:
            return np.zeros((0, 0), np.float32)
        return np.stack([r[0].to_numpy() for r in rows]).astype(np.float32, copy=False)

    def count_after(self, space: str, after_id: int) -> int:
        return self._read("SELECT COUNT(*) FROM faces WHERE space = %s AND id > %s", (space, after_id))[0][0]

    def dimension(self, space: str) -> int:
        rows = self._read("SELECT dimension FROM faces WHERE space = %s LIMIT 1", (space,))
        return rows[0][0] if rows else 0

    def iter_faces_after(self, space: str, after_id: int, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """Faces of a space with id above ``after_id``, in chunks: (ids, subject ids, (N, D) float32)."""
        while True:
            rows = self._read("SELECT id, subject_id, embedding FROM faces WHERE space = %s AND id > %s ORDER BY id LIMIT %s", (space, after_id, chunk))
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            matrix = np.stack([r[2].to_numpy() for r in rows]).astype(np.float32, copy=False)
            yield ids, [r[1] for r in rows], matrix
            after_id = int(ids[-1])

    def names(self, subject_ids: list[str]) -> dict[str, str]:
        if not subject_ids:
            return {}
        return dict(self._read("SELECT id, name FROM subjects WHERE id = ANY(%s)", (list(subject_ids),)))

    def state(self) -> tuple[int, int]:
        """(generation, erasures), read after the write in progress (if any) commits."""

        def read(conn) -> tuple[int, int]:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (_LOCKS, _WRITE))
            row = conn.execute(
                "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM gallery_generation),"
                " (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM gallery_erasures)"
            ).fetchone()
            return int(row[0]), int(row[1])

        return self._run(read)

    def space_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT space, COUNT(*) FROM faces GROUP BY space"))

    def schema_version(self) -> int:
        return self._read("SELECT version FROM facegraph_schema")[0][0]

    # ---- search in the database -------------------------------------------------------------

    def space_index(self, space: str, metric: Metric) -> "DatabaseSpace":
        """What ``graph.identity.index.search_batch`` searches: this space, in the database (one object per space, kept)."""
        key = (space, metric)
        if key not in self._spaces:
            self._spaces[key] = DatabaseSpace(self, space, metric)
        return self._spaces[key]

    def sample_faces(self, space: str, limit: int) -> list[tuple[str, np.ndarray]]:
        """Up to ``limit`` random faces of a space (subject id, embedding), drawn by id through the primary key."""
        bounds = self._read("SELECT MIN(id), MAX(id) FROM faces WHERE space = %s", (space,))[0]
        if bounds[0] is None:
            return []
        ids = np.random.default_rng(0).integers(bounds[0], bounds[1] + 1, limit * 2).tolist()
        rows = self._read("SELECT subject_id, embedding FROM faces WHERE space = %s AND id = ANY(%s) LIMIT %s", (space, ids, limit))
        return [(r[0], r[1].to_numpy()) for r in rows]

    def search_kind(self, space: str, metric: Metric) -> str:
        """What answers a search of the space now: pgvector's HNSW index or an exact scan."""
        return "approximate (pgvector HNSW)" if self.index_ready(space, metric) else "exact (in the database)"

    def index_ready(self, space: str, metric: Metric) -> bool:
        rows = self._read("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = %s", (index_name(space, metric),))
        return bool(rows and rows[0][0])

    def build_index(self, space: str, metric: Metric, dimension: int, memory_mb: int = 1024) -> bool:
        """Build the space's HNSW index (concurrently: enrolls and searches go on); False if another builds it."""
        name = index_name(space, metric)
        opclass = "vector_cosine_ops" if metric == "cosine" else "vector_l2_ops"
        conn = connect(self._dsn)  # its own: a build takes minutes and must not hold the store's lock
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCKS, _BUILD)).fetchone()[0]:
                return False
            invalid = conn.execute("SELECT NOT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = %s", (name,)).fetchone()
            if invalid and invalid[0]:  # left by a build that was interrupted
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{int(memory_mb)}MB")))
            conn.execute(
                sql.SQL(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON faces USING hnsw ((embedding::vector({d})) {ops})"
                    " WITH (m = {m}, ef_construction = {ef}) WHERE space = {space}"
                ).format(
                    name=sql.Identifier(name),
                    d=sql.Literal(int(dimension)),
                    ops=sql.SQL(opclass),
                    m=sql.Literal(self.settings.m),
                    ef=sql.Literal(self.settings.ef_construction),
                    space=sql.Literal(space),
                )
            )
            conn.execute("ANALYZE faces")
            return True
        except psycopg.OperationalError as exc:
            raise _unreachable(exc) from None
        finally:
            conn.close()

    def _use_index(self, space: str, metric: Metric, dimension: int) -> bool:
        """Whether the space's HNSW index answers; starts its build once the space holds ``exact_below`` faces.

        Checked once a minute (another replica may have built it meanwhile).
        """
        name = index_name(space, metric)
        now = time.monotonic()
        if name not in self._ready or now - self._checked.get(name, -np.inf) >= 60:
            self._checked[name] = now
            self._ready[name] = self.index_ready(space, metric)
            if not self._ready[name] and name not in self._building and self.count_after(space, 0) >= self.settings.exact_below:
                self._building.add(name)
                threading.Thread(target=self._build, args=(space, metric, dimension), name="gallery-hnsw-build", daemon=True).start()
        return self._ready[name]

    def _build(self, space: str, metric: Metric, dimension: int) -> None:
        name = index_name(space, metric)
        started = time.perf_counter()
        try:
            if self.build_index(space, metric, dimension, self.settings.build_memory_mb):
                self._ready[name] = True
                logger.info("HNSW index of a gallery space built in %.0f s", time.perf_counter() - started)
        except Exception:
            logger.exception("building the gallery's HNSW index failed; search stays exact")
        finally:
            self._building.discard(name)

    def nearest_faces(self, queries: np.ndarray, space: str, metric: Metric, limit: int, approximate: bool) -> list[list[tuple[str, float, float]]]:
        """Per query row: its ``limit`` nearest faces of ``space`` as (subject id, distance, cosine), closest first.

        One statement for the batch: through the space's HNSW index when ``approximate``, else an exact scan
        (the plan is pinned either way: its row estimates lag behind bulk enrolls, and below some ten
        thousand rows it would rather sort the space than walk the graph).
        """
        dimension = queries.shape[1]
        operator = "<=>" if metric == "cosine" else "<->"
        column = sql.SQL("(embedding::vector({}))").format(sql.Literal(dimension))
        values = sql.SQL(", ").join(sql.SQL("({}, %s::vector)").format(sql.Literal(i)) for i in range(len(queries)))
        query = sql.SQL(
            "SELECT q.i, c.subject_id, c.distance, 1 - c.cosine_distance FROM (VALUES {values}) AS q(i, v)"
            " CROSS JOIN LATERAL (SELECT subject_id, {column} {op} q.v AS distance, {column} <=> q.v AS cosine_distance"
            " FROM faces WHERE space = {space} ORDER BY {column} {op} q.v LIMIT {limit}) AS c ORDER BY q.i, c.distance"
        ).format(values=values, column=column, op=sql.SQL(operator), space=sql.Literal(space), limit=sql.Literal(int(limit)))
        ef_search = min(1000, max(self.settings.ef_search, limit))

        def run(conn) -> list[tuple]:
            if approximate:
                conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef_search)))
                conn.execute("SET LOCAL enable_sort = off")  # the graph gives the order: no plan that sorts the space
            else:
                conn.execute("SET LOCAL enable_indexscan = off")
            return conn.execute(query, [np.ascontiguousarray(q, np.float32) for q in queries]).fetchall()

        out: list[list[tuple[str, float, float]]] = [[] for _ in queries]
        for i, subject_id, distance, cosine in self._run(run):
            out[i].append((subject_id, float(distance), float(cosine)))
        return out

    def search(self, queries: np.ndarray, space: str, metric: Metric, k: int, approximate: bool | None = None) -> list[list[tuple[str, float, float]]]:
        """Per query row: the ``k`` nearest subjects (each one's best face) as (subject id, distance, cosine).

        ``approximate``: through the HNSW index or exactly; None (the Gallery's way) decides by the space's size.
        """
        queries = np.asarray(queries, np.float32).reshape(len(queries), -1)
        dimension = self.dimension(space) if len(queries) else 0
        if not dimension:
            return [[] for _ in queries]
        if queries.shape[1] != dimension:
            raise GalleryError(f"embedding length {queries.shape[1]} does not match the gallery's {dimension}", "embedding_space_mismatch")
        if approximate is None:
            approximate = self._use_index(space, metric, dimension)
        limit = k * self.settings.faces_per_subject
        pending = list(range(len(queries)))
        out: list[list[tuple[str, float, float]]] = [[] for _ in queries]
        while pending:
            found = self.nearest_faces(queries[pending], space, metric, limit, approximate)
            short = []
            for row, candidates in zip(pending, found):
                best: dict[str, tuple[str, float, float]] = {}
                for candidate in candidates:  # closest first: a subject's first row is its best face
                    best.setdefault(candidate[0], candidate)
                out[row] = list(best.values())[:k]
                # Few subjects with many close faces filled the candidates: look further.
                if len(best) < k and len(candidates) == limit:
                    short.append(row)
            pending, limit = short, limit * 4
        return out


class DatabaseSpace:
    """One embedding space of a PostgresStore, searched like a ``GalleryIndex`` (``graph.identity.index.search_batch`` takes either)."""

    # Faces read to measure the gallery's own impostor distances (random ids; pairs of them are compared).
    IMPOSTOR_FACES = 4000

    def __init__(self, store: PostgresStore, space: str, metric: Metric):
        self.store, self.space, self.metric = store, space, metric
        self._count: tuple[tuple[int, int], int] | None = None
        self._impostors: tuple[int, ImpostorModel | None] | None = None

    def __len__(self) -> int:
        """Faces in the space, counted again after a write."""
        state = self.store.state()
        if self._count is None or self._count[0] != state:
            self._count = (state, self.store.count_after(self.space, 0))
        return self._count[1]

    def impostors(self) -> ImpostorModel | None:
        """Impostor distances from a random sample of the space's faces; measured again when the space grew or shrank by 5 %."""
        faces = len(self)
        if self._impostors is not None and abs(faces - self._impostors[0]) <= 0.05 * max(self._impostors[0], 1):
            return self._impostors[1]
        rows = self.store.sample_faces(self.space, self.IMPOSTOR_FACES)
        model = None
        if rows:
            _, codes = np.unique([r[0] for r in rows], return_inverse=True)
            matrix = np.stack([r[1] for r in rows]).astype(np.float32)
            if self.metric == "cosine":
                matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            model = sample_impostors(matrix, codes, self.metric)
        self._impostors = (faces, model)
        return model

    def search(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]:
        """Top-``k`` subjects per query row, closest first (one subject's best face each)."""
        found = self.store.search(queries, self.space, self.metric, k)
        names = self.store.names(sorted({s for row in found for s, _, _ in row}))
        return [[Match(s, names.get(s, ""), d, c, bool(is_match(d, self.metric, threshold))) for s, d, c in row] for row in found]
