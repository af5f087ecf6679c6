"""Identify latency against gallery size: the Gallery replica's own work, on synthetic identities.

For each size: bulk enroll into a fresh SQLite file, load the index cold, then time exact
searches of one face and of a batch of faces (what ``@serve.batch`` hands a replica), and the
catch-up after one more enroll. No Ray and no network: it measures the search itself.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegraph.benchmarks.machine import machine_info
from facegraph.benchmarks.stats import summary_ms
from facegraph.graph.identity.index import GalleryIndex
from facegraph.graph.identity.store import GalleryStore

SPACE = "synthetic:0000000000000000:fp32"
DIMENSION = 128  # dlib ResNet's embedding length
CHUNK = 50_000


def _embeddings(rng: np.random.Generator, n: int) -> np.ndarray:
    # Unit-normal directions scaled to dlib-like norms (~0.6); the timing does not depend on the values.
    x = rng.normal(size=(n, DIMENSION)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True) * 0.6


def _rss_mb() -> float:
    from facegraph.graph.process import rss_mb

    return rss_mb()


def measure(size: int, folder: Path, queries: int, batch: int, metric: str = "euclidean", seed: int = 0) -> dict:
    """Enroll ``size`` identities (one face each) and time searching them."""
    rng = np.random.default_rng(seed)
    path = folder / f"gallery-{size}.sqlite3"
    store = GalleryStore(path)
    started = time.perf_counter()
    with tqdm(total=size, desc=f"enroll {size:,}", unit="face", leave=False) as bar:
        for start in range(0, size, CHUNK):
            n = min(CHUNK, size - start)
            subjects = store.create_subjects([f"person {start + i}" for i in range(n)])
            store.add_faces(list(zip(subjects, _embeddings(rng, n))), SPACE)
            bar.update(n)
    enroll_s = time.perf_counter() - started
    rss_before = _rss_mb()
    index = GalleryIndex(store, SPACE, metric)
    started = time.perf_counter()
    index.refresh()
    load_s = time.perf_counter() - started
    probes = _embeddings(rng, queries) + rng.normal(scale=0.01, size=(queries, DIMENSION)).astype(np.float32)
    index.search(probes[:1], 5, 0.6)  # warm the BLAS threads
    single = []
    for q in probes:
        t0 = time.perf_counter()
        index.search(q[None], 5, 0.6)
        single.append((time.perf_counter() - t0) * 1000)
    batched = []
    for start in range(0, queries - batch + 1, batch):
        t0 = time.perf_counter()
        index.search(probes[start : start + batch], 5, 0.6)
        batched.append((time.perf_counter() - t0) * 1000)
    (subject,) = store.create_subjects(["one more"])
    store.add_face(subject, _embeddings(rng, 1)[0], SPACE)
    t0 = time.perf_counter()
    index.refresh()
    catch_up_ms = (time.perf_counter() - t0) * 1000
    result = {
        "identities": size,
        "dimension": DIMENSION,
        "metric": metric,
        "enroll_s": round(enroll_s, 2),
        "enroll_per_s": round(size / enroll_s),
        "file_mb": round(sum(p.stat().st_size for p in folder.glob(f"gallery-{size}.sqlite3*")) / 2**20, 1),
        "index_load_s": round(load_s, 3),
        "index_mb": round(size * DIMENSION * 4 / 2**20, 1),
        "rss_growth_mb": round(_rss_mb() - rss_before, 1),
        "search_1": summary_ms(single),
        f"search_{batch}": summary_ms(batched),
        f"search_{batch}_per_face_p50_ms": round(float(np.percentile(batched, 50)) / batch, 3) if batched else None,
        "catch_up_after_one_enroll_ms": round(catch_up_ms, 3),
    }
    store.close()
    for p in folder.glob(f"gallery-{size}.sqlite3*"):
        p.unlink()
    return result


def table(results: list[dict], batch: int) -> str:
    lines = [
        f"| identities | search 1 face p50 / p99 ms | search {batch} faces p50 ms (per face) | index load s | index MiB | enroll /s | file MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r[f"search_{batch}"]
        lines.append(
            f"| {r['identities']:,} | {r['search_1']['p50_ms']} / {r['search_1']['p99_ms']} | {b.get('p50_ms')} ({r[f'search_{batch}_per_face_p50_ms']}) "
            f"| {r['index_load_s']} | {r['index_mb']} | {r['enroll_per_s']:,} | {r['file_mb']} |"
        )
    return "\n".join(lines)


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="facegraph-gallery-bench-", dir=args.workdir) as folder:
        for size in args.sizes:
            results.append(measure(size, Path(folder), args.queries, args.batch))
            print(table(results[-1:], args.batch).splitlines()[-1], flush=True)
    report = {"machine": machine_info().to_json(), "date": time.strftime("%Y-%m-%d"), "batch": args.batch, "results": results}
    (out / "gallery.json").write_text(json.dumps(report, indent=2))
    text = f"{table(results, args.batch)}\n\n{machine_info().caption()}\n"
    (out / "gallery.md").write_text(text)
    print(f"\n{text}\nwrote {out / 'gallery.json'} and {out / 'gallery.md'}")
    return 0


def add_parser(sub) -> None:
    bench = sub.add_parser("bench-gallery", help="identify latency against gallery size (synthetic identities, no Ray)")
    bench.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    bench.add_argument("--queries", type=int, default=200, help="searches timed per size")
    bench.add_argument("--batch", type=int, default=16, help="faces per batched search")
    bench.add_argument("--out", default="bench-out")
    bench.add_argument("--workdir", help="folder for the temporary databases (default: the system temp folder)")
    bench.set_defaults(func=main)
