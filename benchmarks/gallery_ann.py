"""Approximate (FAISS IVF-Flat) against exact identity search, on the same synthetic gallery in one run.

Identities are unit-norm 128-d centres with five noisy samples each (genuine probe distances about
0.5, impostors about 1.4: easier than real faces, so recall here is an upper bound); probes are new
samples of enrolled identities. Per size: SQLite bulk enroll, exact load, IVF build, then per
``nprobe``: top-1 identity agreement with exact, recall@1 (the probe's own identity first), recall@10
(the share of exact's top-10 subjects IVF also returns), p50/p99 per query and per batch of 16,
and the memory each adds. No Ray, no network.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegraph.benchmarks.machine import machine_info
from facegraph.benchmarks.synthetic_gallery import DIMENSION, SAMPLES, SPACE, full_batches, overlap_share, time_search, top1_share
from facegraph.graph.config import FaissConfig
from facegraph.graph.identity.index import GalleryIndex
from facegraph.graph.identity.store import GalleryStore

NOISE = 0.35  # per-sample noise (norm), relative to unit-norm centres
CHUNK = 100_000


def _rss_mb() -> float:
    from facegraph.graph.process import rss_mb

    return rss_mb()


def _samples(rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres + rng.normal(scale=NOISE / np.sqrt(DIMENSION), size=centres.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(identities: int, folder: Path, queries: int, batch: int, nprobes: list[int], seed: int = 0) -> dict:
    """One gallery size: enroll it, then exact search and IVF-Flat at each ``nprobe``, scored against each other."""
    rng = np.random.default_rng(seed)
    faces = identities * SAMPLES
    store = GalleryStore(folder / f"ann-{faces}.sqlite3")
    started = time.perf_counter()
    centres, ids = _enroll(store, rng, identities)
    enroll_s = time.perf_counter() - started
    truth = rng.integers(0, identities, queries)
    probes = _samples(rng, centres[truth])
    own = [ids[t] for t in truth]
    exact, exact_found = _exact(store, probes, batch, own)
    ivf, built = _build_ivf(store, nprobes[0])
    approximate = [_at_nprobe(ivf, nprobe, probes, batch, exact_found, own) for nprobe in nprobes]
    result = {
        "faces": faces,
        "identities": identities,
        "dimension": DIMENSION,
        "enroll_s": round(enroll_s, 1),
        "exact": exact,
        "ivf": approximate,
        **built,
    }
    store.close()
    for p in folder.glob(f"ann-{faces}.sqlite3*"):
        p.unlink()
    return result


def _enroll(store: GalleryStore, rng: np.random.Generator, identities: int) -> tuple[np.ndarray, list[str]]:
    """Enroll ``identities`` unit-norm centres with SAMPLES noisy faces each, in chunks of CHUNK faces.

    Returns:
        The centres (probes are new samples of them) and the subject id of each, in order.
    """
    centres = rng.normal(size=(identities, DIMENSION))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids: list[str] = []
    with tqdm(total=identities * SAMPLES, desc=f"enroll {identities * SAMPLES:,}", unit="face", leave=False) as bar:
        for start in range(0, identities, CHUNK // SAMPLES):
            part = centres[start : start + CHUNK // SAMPLES]
            subjects = store.create_subjects([f"person {start + i}" for i in range(len(part))])
            ids += subjects
            rows = [(s, v) for _ in range(SAMPLES) for s, v in zip(subjects, _samples(rng, part))]
            store.add_faces(rows, SPACE)
            bar.update(len(rows))
    return centres, ids


def _subjects(found: list) -> list[list[str]]:
    """Each search's matches as subject ids, closest first."""
    return [[m.subject_id for m in f] for f in found]


def _exact(store: GalleryStore, probes: np.ndarray, batch: int, own: list[str]) -> tuple[dict, list[list[str]]]:
    """Load the exact index and time it; its rankings are what IVF is scored against.

    Returns:
        Its load time, the memory it adds, its search times and recall@1, and each probe's ranking.
    """
    rss0 = _rss_mb()
    exact = GalleryIndex(store, SPACE, "euclidean")
    t0 = time.perf_counter()
    exact.refresh()
    load_s = time.perf_counter() - t0
    added_mb = _rss_mb() - rss0
    exact.search(probes[:1], 10, 0.6)
    found, one, many = _time(exact, probes, batch)
    rankings = _subjects(found)
    return {
        "load_s": round(load_s, 2),
        "rss_mb": round(added_mb, 1),
        "search_1": one,
        f"search_{batch}": many,
        "recall_at_1": top1_share(rankings, own),
    }, rankings


def _build_ivf(store: GalleryStore, nprobe: int) -> tuple[GalleryIndex, dict]:
    """Build the IVF-Flat index over the same store and say what the build cost."""
    rss1 = _rss_mb()
    ivf = GalleryIndex(store, SPACE, "euclidean", FaissConfig(above_faces=1000, nprobe=nprobe))
    t0 = time.perf_counter()
    ivf.refresh()
    ivf.wait_approximate()
    build_s = time.perf_counter() - t0
    ivf_mb = _rss_mb() - rss1
    return ivf, {
        "ivf_build_s": round(build_s, 2),  # load from SQLite + train + add
        "ivf_rss_mb": round(ivf_mb, 1),  # its own copy of the rows plus the lists
        "nlist": ivf._ann.nlist,
    }


def _at_nprobe(ivf: GalleryIndex, nprobe: int, probes: np.ndarray, batch: int, exact: list[list[str]], own: list[str]) -> dict:
    """IVF at one ``nprobe``: its search times, and its rankings scored against exact's and the probes' own identities."""
    ivf._ann.index.nprobe = nprobe
    ivf.search(probes[:1], 10, 0.6)
    found, one, many = _time(ivf, probes, batch)
    rankings = _subjects(found)
    return {
        "nprobe": nprobe,
        "top1_agreement": top1_share(rankings, [e[0] for e in exact]),
        "recall_at_1": top1_share(rankings, own),
        "recall_at_10": overlap_share(rankings, exact),
        "search_1": one,
        f"search_{batch}": many,
    }


def _time(index: GalleryIndex, probes: np.ndarray, batch: int) -> tuple[list, dict, dict]:
    """The top 10 of each probe searched alone, and the times of single and ``batch``-sized searches."""
    return time_search(lambda x: index.search(x, 10, 0.6), probes, full_batches(probes, batch))


def table(results: list[dict], batch: int) -> str:
    lines = [
        f"| faces | search | top-1 = exact | recall@1 | recall@10 | 1 query p50 / p99 ms | {batch} queries p50 / p99 ms | load or build s | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e = r["exact"]
        lines.append(
            f"| {r['faces']:,} | exact | 1 | {e['recall_at_1']:.3f} | 1 | {e['search_1']['p50_ms']} / {e['search_1']['p99_ms']} "
            f"| {e[f'search_{batch}']['p50_ms']} / {e[f'search_{batch}']['p99_ms']} | {e['load_s']} | {e['rss_mb']} |"
        )
        for v in r["ivf"]:
            lines.append(
                f"| {r['faces']:,} | IVF-Flat {r['nlist']} lists, nprobe {v['nprobe']} | {v['top1_agreement']:.3f} | {v['recall_at_1']:.3f} "
                f"| {v['recall_at_10']:.3f} | {v['search_1']['p50_ms']} / {v['search_1']['p99_ms']} "
                f"| {v[f'search_{batch}']['p50_ms']} / {v[f'search_{batch}']['p99_ms']} | {r['ivf_build_s']} | +{r['ivf_rss_mb']} |"
            )
    return "\n".join(lines)


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="facegraph-ann-bench-", dir=args.workdir) as folder:
        for identities in args.identities:
            results.append(measure(identities, Path(folder), args.queries, args.batch, args.nprobe))
            print(table(results[-1:], args.batch), flush=True)
    report = {"machine": machine_info().to_json(), "date": time.strftime("%Y-%m-%d"), "batch": args.batch, "samples_per_identity": SAMPLES, "results": results}
    (out / "gallery-ann.json").write_text(json.dumps(report, indent=2))
    text = f"{table(results, args.batch)}\n\n{machine_info().caption()}\n"
    (out / "gallery-ann.md").write_text(text)
    print(f"\n{text}\nwrote {out / 'gallery-ann.json'} and {out / 'gallery-ann.md'}")
    return 0


def add_parser(sub) -> None:
    bench = sub.add_parser("bench-gallery-ann", help="approximate (FAISS IVF-Flat) against exact identity search (synthetic, no Ray)")
    bench.add_argument("--identities", type=int, nargs="+", default=[20_000, 200_000], help="identities per run (5 faces each)")
    bench.add_argument("--queries", type=int, default=200)
    bench.add_argument("--batch", type=int, default=16)
    bench.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    bench.add_argument("--out", default="bench-out")
    bench.add_argument("--workdir", help="folder for the temporary databases")
    bench.set_defaults(func=main)
