"""The PostgreSQL gallery store against a real server (initdb in a temporary folder, unix socket only).

Same answers as the SQLite store, search in the database (exact and HNSW), erasure, schema
migration, the write counter other replicas follow, and a DSN that never shows.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import psycopg
import pytest

from facegraph.benchmarks.local_postgres import LocalPostgres
from facegraph.graph.core.wire import SearchRequest
from facegraph.graph.config import ENV_GALLERY_DSN, FacegraphConfig, PgvectorIndex
from facegraph.graph.identity.index import GalleryIndex, search_batch
from facegraph.graph.identity.postgres import SCHEMA_VERSION, PostgresStore, connect, index_name, migrate
from facegraph.graph.identity.store import GalleryError, GalleryStore
from tests.unit.test_gallery import SPACE, _brute_force

_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture
def dsn(server):
    """A fresh database per test."""
    name = f"t{next(_names)}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server.dsn.rsplit(' ', 1)[0]} dbname={name}"


@pytest.fixture
def store(dsn):
    s = PostgresStore(dsn)
    yield s
    s.close()


def _enroll(store, rng, subjects=60, per_subject=5, dimension=128):
    ids = store.create_subjects([f"s{i}" for i in range(subjects)])
    owners = [ids[i % subjects] for i in range(subjects * per_subject)]
    matrix = rng.normal(size=(len(owners), dimension)).astype(np.float32)
    store.add_faces(list(zip(owners, matrix)), SPACE)
    return ids, owners, matrix


def test_subjects_have_the_sqlite_stores_shapes_and_refusals(store, tmp_path):
    sqlite = GalleryStore(tmp_path / "g.sqlite3")
    for s in (store, sqlite):
        made = s.create_subject("Ada", {"team": "x", "n": [1, 2]})
        face = s.add_face(made["id"], np.ones(4, np.float32), SPACE)
        assert isinstance(face, int)
        got = s.get_subject(made["id"])
        assert got["faces"] == 1 and got["faces_by_space"] == {SPACE: 1} and got["metadata"] == {"team": "x", "n": [1, 2]}
        listed = s.list_subjects(10, 0)
        assert listed["total"] == 1 and listed["subjects"][0] == got
        for call in (lambda: s.get_subject("nope"), lambda: s.delete_subject("nope"), lambda: s.add_face("nope", np.ones(4), SPACE)):
            with pytest.raises(GalleryError) as err:
                call()
            assert err.value.code == "not_found" and "nope" not in err.value.message
    pg_subject, sq_subject = store.list_subjects()["subjects"][0], sqlite.list_subjects()["subjects"][0]
    assert pg_subject.keys() == sq_subject.keys()
    assert {k: v for k, v in pg_subject.items() if k not in ("id", "created_at")} == {k: v for k, v in sq_subject.items() if k not in ("id", "created_at")}
    np.testing.assert_array_equal(store.subject_faces(pg_subject["id"], SPACE), np.ones((1, 4), np.float32))
    assert store.names([pg_subject["id"]]) == {pg_subject["id"]: "Ada"} and store.dimension(SPACE) == 4
    assert store.space_counts() == {SPACE: 1} and store.subject_count() == 1
    sqlite.close()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("faces_per_subject", [5, 1])
def test_search_in_the_database_equals_brute_force(dsn, metric, faces_per_subject):
    """Five faces a subject: with one candidate per subject the search must look further, and still be exact."""
    store = PostgresStore(dsn, PgvectorIndex(faces_per_subject=faces_per_subject))
    rng = np.random.default_rng(1)
    ids, owners, matrix = _enroll(store, rng)
    queries = matrix[:7] + rng.normal(scale=0.1, size=(7, 128)).astype(np.float32)
    found = store.search(queries, SPACE, metric, 5)
    for got, want in zip(found, _brute_force(queries, matrix, owners, metric, 5)):
        assert [s for s, _, _ in got] == [s for s, _ in want]
        np.testing.assert_allclose([d for _, d, _ in got], [d for _, d in want], rtol=1e-4, atol=1e-4)
    # Through the requests the Gallery deployment batches: names, thresholds, per-request top_k.
    requests = [SearchRequest(queries[:2], SPACE, metric, 3, 0.5), SearchRequest(queries[2:3], SPACE, metric, 1, 0.0)]
    answers = search_batch(store.space_index, requests)
    faces = [a.faces for a in answers]
    assert [len(a) for a in faces] == [2, 1] and len(faces[0][0]) == 3 and len(faces[1][0]) == 1
    best = faces[0][0][0]
    assert best.name == f"s{ids.index(best.subject_id)}" and -1.0 <= best.similarity <= 1.0
    # The decision counts the space's faces in the database; with a false-match rate and the gallery's
    # own impostors (20+ subjects, sampled from the database) the rule says where the threshold came from.
    assert answers[0].decision.rule == "fixed" and answers[0].decision.gallery_faces == len(matrix)
    (decided,) = search_batch(store.space_index, [SearchRequest(queries[:1], SPACE, metric, 3, 0.5 if metric == "cosine" else 10.0, 0.01)])
    assert decided.decision.rule == "false-match-rate" and decided.decision.impostor_pairs > 1000
    store.close()


def test_the_index_follows_the_store_like_sqlite(store):
    """The Store protocol: the replica-side index (and a second replica's store) sees every committed write."""
    rng = np.random.default_rng(3)
    ids, owners, matrix = _enroll(store, rng, subjects=20, per_subject=2)
    other = PostgresStore(store._dsn)
    index = GalleryIndex(other, SPACE, "euclidean")
    index.refresh()
    assert len(index) == 40
    (new,) = store.create_subjects(["new"])
    store.add_face(new, matrix[0] * 0 + 3, SPACE)
    index.refresh()
    assert len(index) == 41 and index.search((matrix[0] * 0 + 3)[None], 1, 0.5)[0][0].subject_id == new
    store.delete_subject(ids[0])
    index.refresh()
    assert len(index) == 39
    other.close()


def test_hnsw_index_is_built_in_the_background_and_used(dsn):
    rng = np.random.default_rng(4)
    store = PostgresStore(dsn, PgvectorIndex(exact_below=300, ef_search=100))
    ids, owners, matrix = _enroll(store, rng, subjects=100, per_subject=3, dimension=16)
    assert not store.index_ready(SPACE, "euclidean")
    queries = matrix[:20] + rng.normal(scale=0.05, size=(20, 16)).astype(np.float32)
    exact = store.search(queries, SPACE, "euclidean", 5)  # starts the build
    for _ in range(1200):
        if store._ready.get(index_name(SPACE, "euclidean")):
            break
        threading.Event().wait(0.05)
    assert store.index_ready(SPACE, "euclidean")
    conn = store._connection()
    with conn.transaction():  # the statement search runs, with the settings it pins
        conn.execute("SET LOCAL enable_sort = off")
        query = f"EXPLAIN SELECT id FROM faces WHERE space = '{SPACE}' ORDER BY (embedding::vector(16)) <-> %s::vector LIMIT 10"
        plan = "\n".join(r[0] for r in conn.execute(query, (queries[0],)).fetchall())
    assert index_name(SPACE, "euclidean") in plan, plan
    approximate = store.search(queries, SPACE, "euclidean", 5)
    # Queries close to enrolled faces: the graph finds the same best subject as the scan.
    assert [r[0][0] for r in approximate] == [r[0][0] for r in exact] == [owners[i] for i in range(20)]
    store.close()


def test_erasure_removes_the_rows_and_vacuum_the_bytes(store, server):
    rng = np.random.default_rng(5)
    ids, owners, matrix = _enroll(store, rng, subjects=30, per_subject=2)
    victim = ids[10]
    assert store.delete_subject(victim) == 2
    conn = store._connection()
    assert conn.execute("SELECT COUNT(*) FROM faces WHERE subject_id = %s", (victim,)).fetchone()[0] == 0
    assert victim not in {s for row in store.search(matrix[10:11], SPACE, "euclidean", 30) for s, _, _ in row}
    heap = server.data / conn.execute("SELECT pg_relation_filepath('faces')").fetchone()[0]
    needle = matrix[10].tobytes()
    # Until VACUUM (or a read that prunes the page) the dead row's bytes may still sit in the page;
    # VACUUM compacts it, moving the rows stored after this one over it (README: the last row's bytes can stay).
    conn.execute("VACUUM faces")
    conn.execute("CHECKPOINT")
    assert needle not in heap.read_bytes()


def test_schema_is_created_and_migrated_in_place(dsn):
    conn = connect(dsn)
    assert migrate(conn, target=1) == 0  # a database of the first release
    conn.execute("INSERT INTO subjects VALUES ('a', 'Ada', '{}', 1.0)")
    assert conn.execute("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'faces_by_subject'").fetchone()[0] == 0
    conn.close()
    store = PostgresStore(dsn)
    assert store.schema_version() == SCHEMA_VERSION == 2
    assert store.get_subject("a")["name"] == "Ada"
    assert store._read("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'faces_by_subject'")[0][0] == 1
    store._read("UPDATE facegraph_schema SET version = 99 RETURNING version")
    store.close()
    with pytest.raises(GalleryError, match="newer than this facegraph"):
        PostgresStore(dsn)


def test_write_counter_moves_on_every_write_and_erasures_on_erasures(store):
    g0, e0 = store.state()
    subject = store.create_subject("a")["id"]
    store.add_face(subject, np.ones(4, np.float32), SPACE)
    g1, e1 = store.state()
    assert g1 == g0 + 2 and e1 == e0
    store.get_subject(subject)
    assert store.state() == (g1, e1)  # reads are not writes
    store.delete_subject(subject)
    assert store.state() == (g1 + 1, e1 + 1)


def test_concurrent_enrolls_from_several_replicas_lose_nothing_and_commit_in_id_order(store):
    subject = store.create_subject("many")["id"]
    replicas = [PostgresStore(store._dsn) for _ in range(4)]
    ids: list[int] = []

    def enroll(s):
        for _ in range(25):
            ids.append(s.add_face(subject, np.ones(4, np.float32), SPACE))

    threads = [threading.Thread(target=enroll, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 100 and store.get_subject(subject)["faces"] == 100
    assert store.state()[0] >= 101
    for r in replicas:
        r.close()


def test_the_dsn_never_shows(server, monkeypatch):
    secret = "hunter2-not-for-logs"
    bad = f"host={server.folder} user=nobody-here password={secret} dbname=postgres"
    for dsn in (bad, f"postgresql://x:{secret}@/db?host={server.folder}&bogus=1", f"host={server.folder} password={secret} nonsense"):
        with pytest.raises(GalleryError) as err:
            PostgresStore(dsn)
        assert secret not in str(err.value) and err.value.code == "unavailable"
        assert err.value.__suppress_context__
    monkeypatch.setenv(ENV_GALLERY_DSN, bad)
    settings = FacegraphConfig.model_validate({"gallery": {"backend": "postgres"}}).gallery_store()
    assert settings.dsn.get_secret_value() == bad
    assert secret not in repr(settings) and secret not in settings.model_dump_json()
    monkeypatch.delenv(ENV_GALLERY_DSN)
    with pytest.raises(ValueError, match=ENV_GALLERY_DSN):
        FacegraphConfig.model_validate({"gallery": {"backend": "postgres"}}).gallery_store()


def test_enroll_by_folder_writes_to_the_postgres_gallery_the_config_names(dsn, tmp_path):
    """``facegraph batch --enroll-by-folder`` with ``gallery.backend: postgres``: the faces land in PostgreSQL, no SQLite file appears."""
    import pyarrow as pa

    from facegraph.graph.batch.enroll import EnrollStage
    from facegraph.graph.batch.rows import OUTPUT

    sqlite_file = tmp_path / "would-be-gallery.sqlite3"
    config = FacegraphConfig.model_validate({"gallery": {"backend": "postgres", "dsn": dsn, "database": str(sqlite_file)}})
    vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
    face = {"status": "face", "faces": 1, "embedding": vector.tolist(), "embedding_space": SPACE}
    rows = [
        {**face, "path": "/archive/Ada/1.jpg"},
        {**face, "path": "/archive/Ada/2.jpg"},
        {"path": "/archive/Bob/1.jpg", "status": "no_face", "faces": 0},
    ]
    out = EnrollStage(config)(pa.Table.from_pylist(rows, schema=OUTPUT)).to_pylist()
    assert [r["enroll_status"] for r in out] == ["enrolled", "enrolled", "no_face"]
    store = PostgresStore(dsn)
    try:
        (ada,) = store.list_subjects(10, 0)["subjects"]
        assert ada["name"] == "Ada" and ada["id"] == out[0]["subject_id"] and store.space_counts() == {SPACE: 2}
    finally:
        store.close()
    assert not sqlite_file.exists()
