"""pgvector HNSW against exact search in PostgreSQL, on the same synthetic gallery in one run.

For each size (faces; 5 samples per identity, 128-d unit vectors): COPY into a fresh database of a
throwaway server (unix socket), time exact searches (the scan the postgres backend runs below
``exact_below``), build the HNSW index, time searches through it, and score both against a numpy
brute force: top-1 identity (the identity a query was drawn from), recall@1 and recall@10 of the
subjects exact search ranks first. Then project 10M and 100M from the measured growth.

    python -m benchmarks.gallery_postgres --sizes 100000 1000000 --out benchmarks/results/...
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

from benchmarks.local_postgres import LocalPostgres
from benchmarks.machine import machine_info
from benchmarks.stats import summary_ms
from graph.config import PgvectorIndex
from graph.identity.postgres import PostgresStore, index_name

SPACE = "synthetic:0000000000000000:fp32"
DIMENSION = 128
SAMPLES = 5  # faces per identity
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


def _timed(fn, rounds: list) -> list[float]:
    out = []
    for args in rounds:
        t0 = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t0) * 1000)
    return out


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
    identities = faces // SAMPLES
    name = f"g{faces}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"{pg.dsn.rsplit(' ', 1)[0]} dbname={name}"
    store = PostgresStore(dsn, PgvectorIndex(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search, exact_below=10**12))
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
    centers = np.concatenate(centers_by_chunk)
    number = {s: i for i, s in enumerate(subjects)}
    truth = rng.integers(0, identities, args.queries)
    queries = _samples(rng, centers[truth], 1)  # new pictures of enrolled people
    exact = _exact_subjects(queries, faces_by_chunk, 10)

    def ranked(rows) -> list[list[int]]:
        return [[number[s] for s, _, _ in row] for row in rows]

    result: dict = {"faces": faces, "identities": identities, "copy_s": round(load_s, 1), "copy_rows_per_s": round(faces / load_s)}
    # Exact search in the database: few rounds, it scans the whole space each time.
    n_exact = args.exact_queries
    single = _timed(lambda q: store.search(q[None], SPACE, "euclidean", 10, approximate=False), [(q,) for q in queries[:n_exact]])
    batches = [(queries[i : i + 16],) for i in range(0, min(len(queries), 16 * args.exact_batches), 16)]
    batched = _timed(lambda q: store.search(q, SPACE, "euclidean", 10, approximate=False), batches)
    exact_rows = ranked(store.search(queries[:n_exact], SPACE, "euclidean", 10, approximate=False))
    result["exact"] = {
        "search_1": summary_ms(single),
        "search_16": summary_ms(batched),
        "agrees_with_numpy_top10": float(np.mean([r == list(e) for r, e in zip(exact_rows, exact[:n_exact])])),
        "top1_identity": float(np.mean([r[0] == t for r, t in zip(exact_rows, truth)])),
    }
    built = _build(store, args.build_budget_s, args.build_memory_mb)
    result["hnsw"] = {"m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search, **built}
    sizes = store._read(
        "SELECT pg_relation_size('faces'), pg_total_relation_size('faces'), COALESCE((SELECT pg_relation_size(c.oid) FROM pg_class c WHERE relname = %s), 0)",
        (index_name(SPACE, "euclidean"),),
    )[0]
    result["table_mb"] = round(sizes[0] / 2**20, 1)
    result["table_with_indexes_mb"] = round(sizes[1] / 2**20, 1)
    result["hnsw"]["index_mb"] = round(sizes[2] / 2**20, 1)
    result["disk_bytes_per_face"] = round(sizes[1] / faces)
    if built["built"]:
        store.search(queries[:1], SPACE, "euclidean", 10, approximate=True)  # page the graph in
        single = _timed(lambda q: store.search(q[None], SPACE, "euclidean", 10, approximate=True), [(q,) for q in queries])
        batches = [(queries[i : i + 16],) for i in range(0, len(queries) - 15, 16)]
        batched = _timed(lambda q: store.search(q, SPACE, "euclidean", 10, approximate=True), batches)
        rows = ranked(store.search(queries, SPACE, "euclidean", 10, approximate=True))
        result["hnsw"].update(
            search_1=summary_ms(single),
            search_16=summary_ms(batched),
            top1_identity=float(np.mean([bool(r) and r[0] == t for r, t in zip(rows, truth)])),
            top1_agreement_with_exact=float(np.mean([bool(r) and r[0] == e[0] for r, e in zip(rows, exact)])),
            recall_at_1=float(np.mean([bool(r) and r[0] == e[0] for r, e in zip(rows, exact)])),
            recall_at_10=float(np.mean([len(set(r[:10]) & set(e[:10])) / 10 for r, e in zip(rows, exact)])),
        )
    result["numpy_top1_identity"] = float(np.mean(exact[:, 0] == truth))
    store.close()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")
    return result


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
