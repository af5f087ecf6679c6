"""pgvector HNSW against exact search in PostgreSQL, on the same synthetic gallery in one run.

For each size (faces; 5 samples per identity, 128-d unit vectors): COPY into a fresh database of a
throwaway server (unix socket), time exact searches (the scan the postgres backend runs below
``exact_below``), build the HNSW index, time searches through it, and score both against a numpy
brute force: top-1 identity (the identity a query was drawn from), recall@1 and recall@10 of the
subjects exact search ranks first. Then project 10M and 100M from the measured growth.

    python -m facegraph.benchmarks.gallery_postgres --sizes 100000 1000000 --out benchmarks/results/...
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import psycopg

from facegraph.benchmarks.local_postgres import LocalPostgres
from facegraph.benchmarks.machine import machine_info
from facegraph.benchmarks.synthetic_gallery import DIMENSION, SAMPLES, SPACE, full_batches, overlap_share, time_search, top1_share
from facegraph.graph.config import PgvectorIndex
from facegraph.graph.identity.postgres import PostgresStore, index_name

NOISE = 0.05  # per coordinate: a sample's cosine to its identity's centre is about 0.87
CHUNK = 50_000  # identities per COPY


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _samples(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    return _unit(np.repeat(centers, n, axis=0) + rng.normal(scale=NOISE, size=(len(centers) * n, DIMENSION)))


def _exact_subjects(queries: np.ndarray, faces_by_chunk: list[np.ndarray], k: int) -> np.ndarray:
    """(Q, k) identity numbers, closest first: each identity's best sample, by brute force."""
    best = np.concatenate([(-(queries @ f.T)).reshape(len(queries), -1, SAMPLES).min(-1) for f in faces_by_chunk], axis=1)
    top = np.argpartition(best, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(np.take_along_axis(best, top, 1), axis=1), 1)


def _build(store: PostgresStore, budget_s: float, memory_mb: int) -> dict:
    """Build the HNSW index, watching pg_stat_progress_create_index; cancel past ``budget_s``."""
    done: dict = {}

    def run():
        try:
            done["ok"] = store.build_index(SPACE, "euclidean", DIMENSION, memory_mb)
        except Exception as exc:  # cancelled past the budget
            done["error"] = type(exc).__name__

    watch = psycopg.connect(store._dsn, autocommit=True)
    started = time.perf_counter()
    thread = threading.Thread(target=run)
    thread.start()
    progress = (0, 0)
    while thread.is_alive():
        thread.join(2)
        row = watch.execute("SELECT pid, tuples_done, tuples_total FROM pg_stat_progress_create_index").fetchone()
        if row:
            progress = (row[1], row[2])
            if time.perf_counter() - started > budget_s:
                watch.execute("SELECT pg_cancel_backend(%s)", (row[0],))
    watch.close()
    elapsed = time.perf_counter() - started
    return {"build_s": round(elapsed, 1), "built": bool(done.get("ok")), "tuples_done_when_last_seen": progress[0], "tuples_total": progress[1]}


def measure(pg: LocalPostgres, faces: int, args, rng: np.random.Generator) -> dict:
    """One size in a fresh database: COPY the gallery, search it exactly, build HNSW and search through it, then drop it."""
    identities = faces // SAMPLES
    name = f"g{faces}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"{pg.dsn.rsplit(' ', 1)[0]} dbname={name}"
    store = PostgresStore(dsn, PgvectorIndex(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search, exact_below=10**12))
    centers, faces_by_chunk, subjects, load_s = _copy_gallery(store, rng, identities)
    probes = _Probes.draw(rng, centers, faces_by_chunk, subjects, args.queries)
    exact = _exact_in_database(store, probes, args.exact_queries, args.exact_batches)
    built = _build(store, args.build_budget_s, args.build_memory_mb)
    disk, index_mb = _disk(store, faces)
    hnsw = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search, **built, "index_mb": index_mb}
    if built["built"]:
        hnsw.update(_through_hnsw(store, probes))
    result = {
        "faces": faces,
        "identities": identities,
        "copy_s": round(load_s, 1),
        "copy_rows_per_s": round(faces / load_s),
        "exact": exact,
        "hnsw": hnsw,
        **disk,
        "numpy_top1_identity": float(np.mean(probes.exact[:, 0] == probes.truth)),
    }
    store.close()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")
    return result


def _copy_gallery(store: PostgresStore, rng: np.random.Generator, identities: int) -> tuple[np.ndarray, list[np.ndarray], list[str], float]:
    """COPY ``identities`` random centres with SAMPLES faces each, CHUNK identities at a time, then ANALYZE.

    Returns:
        The centres, the faces of each chunk (for the numpy brute force), the subject ids in order, and the seconds spent in COPY.
    """
    centers_by_chunk, faces_by_chunk, subjects = [], [], []
    load_s = 0.0
    for start in range(0, identities, CHUNK):
        centers = _unit(rng.normal(size=(min(CHUNK, identities - start), DIMENSION)))
        samples = _samples(rng, centers, SAMPLES)
        t0 = time.perf_counter()
        ids = store.create_subjects([f"person {start + i}" for i in range(len(centers))])
        store.add_faces(list(zip(np.repeat(ids, SAMPLES), samples)), SPACE)
        load_s += time.perf_counter() - t0
        centers_by_chunk.append(centers)
        faces_by_chunk.append(samples)
        subjects.extend(ids)
    store._run(lambda conn: conn.execute("ANALYZE faces"))
    return np.concatenate(centers_by_chunk), faces_by_chunk, subjects, load_s


@dataclass(frozen=True)
class _Probes:
    """The queries and what they are scored against.

    Attributes:
        queries: (Q, DIMENSION) float32, new samples of enrolled identities.
        truth: (Q,) the identity number each query was drawn from.
        exact: (Q, 10) identity numbers of numpy's brute force, closest first.
        number: a subject id's identity number.
    """

    queries: np.ndarray
    truth: np.ndarray
    exact: np.ndarray
    number: dict[str, int]

    @classmethod
    def draw(cls, rng: np.random.Generator, centers: np.ndarray, faces_by_chunk: list[np.ndarray], subjects: list[str], count: int) -> _Probes:
        truth = rng.integers(0, len(centers), count)
        queries = _samples(rng, centers[truth], 1)  # new pictures of enrolled people
        return cls(queries, truth, _exact_subjects(queries, faces_by_chunk, 10), {s: i for i, s in enumerate(subjects)})

    def ranked(self, rows: list[list[tuple[str, float, float]]]) -> list[list[int]]:
        """The database's answers as identity numbers, closest first."""
        return [[self.number[s] for s, _, _ in row] for row in rows]


def _exact_in_database(store: PostgresStore, probes: _Probes, count: int, batches: int) -> dict:
    """Exact search in the database on the first ``count`` queries, timed and checked against numpy.

    Few rounds: it scans the whole space each time.
    """
    search = partial(store.search, space=SPACE, metric="euclidean", k=10, approximate=False)
    queries = probes.queries
    _, one, many = time_search(search, queries[:count], [queries[i : i + 16] for i in range(0, min(len(queries), 16 * batches), 16)])
    rows = probes.ranked(search(queries[:count]))
    return {
        "search_1": one,
        "search_16": many,
        "agrees_with_numpy_top10": float(np.mean([r == list(e) for r, e in zip(rows, probes.exact[:count])])),
        "top1_identity": top1_share(rows, probes.truth),
    }


def _disk(store: PostgresStore, faces: int) -> tuple[dict, float]:
    """The faces table's size on disk, with its indexes and per face, and (apart) the HNSW index's MiB."""
    sizes = store._read(
        "SELECT pg_relation_size('faces'), pg_total_relation_size('faces'), COALESCE((SELECT pg_relation_size(c.oid) FROM pg_class c WHERE relname = %s), 0)",
        (index_name(SPACE, "euclidean"),),
    )[0]
    disk = {"table_mb": round(sizes[0] / 2**20, 1), "table_with_indexes_mb": round(sizes[1] / 2**20, 1), "disk_bytes_per_face": round(sizes[1] / faces)}
    return disk, round(sizes[2] / 2**20, 1)


def _through_hnsw(store: PostgresStore, probes: _Probes) -> dict:
    """Search through the built HNSW index, timed and scored against numpy's exact rankings and the truth."""
    search = partial(store.search, space=SPACE, metric="euclidean", k=10, approximate=True)
    search(probes.queries[:1])  # page the graph in
    _, one, many = time_search(search, probes.queries, full_batches(probes.queries, 16))
    rows = probes.ranked(search(probes.queries))
    return {
        "search_1": one,
        "search_16": many,
        "top1_identity": top1_share(rows, probes.truth),
        "top1_agreement_with_exact": top1_share(rows, probes.exact[:, 0]),
        "recall_at_1": top1_share(rows, probes.exact[:, 0]),
        "recall_at_10": overlap_share(rows, probes.exact),
    }


def _power_law(a: dict, b: dict, x: float, y: float, faces: int) -> float:
    """``y`` (at ``b``'s size) grown to ``faces`` at the exponent that took ``x`` (at ``a``'s size) to ``y``."""
    exponent = math.log(y / x) / math.log(b["faces"] / a["faces"])
    return y * (faces / b["faces"]) ** exponent


def project(results: list[dict]) -> dict:
    """10M and 100M faces from measured growth: exact search, COPY and sizes from the two largest sizes,
    the HNSW build and search from the two largest whose index was built (recall is not projected)."""
    built = [r for r in results if r["hnsw"]["built"]]
    if len(results) < 2 or len(built) < 2:
        return {}
    a, b = results[-2], results[-1]
    ha, hb = built[-2], built[-1]
    out: dict = {}
    for faces in (10_000_000, 100_000_000):
        out[str(faces)] = {
            "exact_search_1_p50_ms": round(_power_law(a, b, a["exact"]["search_1"]["p50_ms"], b["exact"]["search_1"]["p50_ms"], faces)),
            "copy_s": round(faces / b["copy_rows_per_s"]),
            "table_with_btree_indexes_mb": round(b["table_with_indexes_mb"] * faces / b["faces"]),
            "hnsw_index_mb": round(hb["hnsw"]["index_mb"] * faces / hb["faces"]),
            "hnsw_build_s": round(_power_law(ha, hb, ha["hnsw"]["build_s"], hb["hnsw"]["build_s"], faces)),
            "hnsw_search_1_p50_ms": round(_power_law(ha, hb, ha["hnsw"]["search_1"]["p50_ms"], hb["hnsw"]["search_1"]["p50_ms"], faces), 1),
        }
    out["method"] = (
        f"power law: exact search from {a['faces']:,} to {b['faces']:,} faces, HNSW from {ha['faces']:,} to {hb['faces']:,}; "
        "sizes and COPY linear in faces; recall not projected"
    )
    unfinished = [r for r in results if not r["hnsw"]["built"]]
    if unfinished:
        r = unfinished[0]
        out["unfinished_build"] = (
            f"{r['faces']:,} faces: {r['hnsw']['tuples_done_when_last_seen']:,} inserted into the graph in {r['hnsw']['build_s']} s "
            "before the build budget cancelled it"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="faces (5 per identity)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=30)
    parser.add_argument("--exact-batches", type=int, default=3)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, default=200)
    parser.add_argument("--build-memory-mb", type=int, default=2048)
    parser.add_argument("--build-budget-s", type=float, default=600)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reproject", action="store_true", help="only recompute the projections of OUT/results.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reproject:
        report = json.loads((out / "results.json").read_text())
        report["projected"] = project(report["results"])
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    rng = np.random.default_rng(0)
    settings = {"shared_buffers": "1GB", "max_parallel_maintenance_workers": "1", "max_wal_size": "4GB"}
    report: dict = {"machine": machine_info().to_json(), "date": time.strftime("%Y-%m-%d"), "dimension": DIMENSION, "samples_per_identity": SAMPLES}
    report["uptime_before"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = []
    with LocalPostgres(settings) as pg:
        report["server"] = subprocess.run([str(pg.bindir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
        for faces in args.sizes:
            results.append(measure(pg, faces, args, rng))
            results[-1]["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            print(json.dumps(results[-1]), flush=True)
    report["results"] = results
    report["projected"] = project(results)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
