"""``facegraph bench-batch``: the bulk job against the served graph over HTTP, same pictures and models, one run.

First the graph under closed-loop HTTP load at a few client counts (as ``facegraph bench`` loads
it), then ``facegraph batch``'s job over the same pictures written ``--copies`` and twice as many
times to folders, on a fresh local Ray. A job's time runs from building the dataset to the last
parquet file written (actor start-up and model loading included); Ray's own start is left out of
both. Writes ``results.json`` with ``ratios.batch_vs_graph_http_throughput`` (the job's pace once
its pools are up, from the two runs) and the end-to-end ratio beside it.

    RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c \\
        'ip link set lo up && .venv/bin/facegraph bench-batch --out bench-out/batch'
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from benchmarks import machine
from benchmarks.graph_bench import ray_resources
from benchmarks.load import Phase
from benchmarks.pictures import Picture, photo_pictures, picture_mix, style_for
from benchmarks.stats import ratio
from graph.config import FacegraphConfig

LEVELS = (4, 16, 64)


def _load() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (what ``uptime`` prints)."""
    return [round(v, 2) for v in os.getloadavg()]


def write_archive(pictures: Sequence[Picture], folder: Path, copies: int) -> int:
    """Each picture ``copies`` times, under its own folder per copy (distinct paths, same bytes)."""
    for k in range(copies):
        (folder / f"copy-{k:03d}").mkdir(parents=True, exist_ok=True)
        for picture in pictures:
            (folder / f"copy-{k:03d}" / f"{picture.name}.jpg").write_bytes(picture.jpeg)
    return copies * len(pictures)


def _job(config: FacegraphConfig, pictures: Sequence[Picture], copies: int, workdir: Path) -> dict:
    """One run of the job over ``copies`` copies of the pictures (fresh folders, an empty DEST)."""
    from graph.batch.job import run_job

    source, dest = workdir / f"archive-{copies}", workdir / f"out-{copies}"
    count = write_archive(pictures, source, copies)
    load_before = _load()
    summary = run_job(config, str(source), str(dest))
    return {
        "pictures": count,
        "processed": summary.pictures,
        "faces": summary.faces,
        "errors": summary.errors,
        "seconds": round(summary.seconds, 2),
        "pictures_per_s": round(summary.pictures_per_s, 3),
        "stage_busy_s": {k: round(v, 2) for k, v in summary.stage_s.items()},
        "load_avg_before": load_before,
        "load_avg_after": _load(),
    }


def bench_batch(config: FacegraphConfig, pictures: Sequence[Picture], copies: int, workdir: Path) -> dict:
    """After a short warm-up job, the job over ``copies`` and ``2 x copies`` copies of the pictures, on one fresh local Ray.

    Each run starts its own actor pools (processes, model loading); the extra pictures of the
    second over the extra time it took is the job's pace once its pools are up (``steady``).
    """
    import ray
    from ray.data import DataContext

    resources = ray_resources(config)
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], log_to_driver=False, configure_logging=False)
    ray_start_s = time.perf_counter() - started
    DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    try:
        # A first short job pays what only a cluster's first job pays (worker processes, cold files).
        warm_up = _job(config, pictures[:4], 1, workdir)
        runs = [_job(config, pictures, n, workdir) for n in (copies, 2 * copies)]
    finally:
        ray.shutdown()
    small, large = runs
    extra_s = large["seconds"] - small["seconds"]
    steady = (large["processed"] - small["processed"]) / extra_s if extra_s > 0 else None
    return {
        "warm_up": warm_up,
        "runs": runs,
        "pictures_per_s": large["pictures_per_s"],
        "steady_pictures_per_s": round(steady, 3) if steady else None,
        "start_up_s": round(small["seconds"] - small["processed"] / steady, 2) if steady else None,
        "ray_start_s": round(ray_start_s, 2),
    }


def run(config: FacegraphConfig, out_dir: Path, copies: int, photos: Path | None, phase: Phase, levels: Sequence[int] = LEVELS) -> dict:
    import asyncio

    from benchmarks.graph_bench import GraphBench

    style = style_for(config.detector.model)
    pictures = picture_mix(16, style) + (photo_pictures(photos) if style == "faces" else [])
    print(f"[bench-batch] {len(pictures)} pictures; the graph over HTTP at {list(levels)} clients", file=sys.stderr, flush=True)
    load_before = _load()
    served = GraphBench(config, pictures)
    served.start()
    try:
        http = asyncio.run(served.measure(levels, phase, modes=("http",)))["http"]
    finally:
        served.stop()
    graph = {"http": http, "ray": {**served.resources, "startup_s": served.startup_s}, "load_avg_before": load_before, "load_avg_after": _load()}
    print(f"[bench-batch] facegraph batch over {copies} copies of them", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="facegraph-bench-batch-") as work:
        batch = bench_batch(config, pictures, copies, Path(work))
    best = max(http, key=lambda r: r["throughput_rps"])
    info = machine.machine_info()
    results = {
        "machine": info.to_json(),
        "caption": info.caption(),
        "config": config.model_dump(mode="json"),
        "pictures": [{"name": p.name, "width": p.width, "height": p.height, "faces": p.faces, "style": p.style} for p in pictures],
        "graph": graph,
        "batch": batch,
        "ratios": {
            # Both at their pace once started (the graph's load excludes its start, as the job's steady pace does).
            "batch_vs_graph_http_throughput": ratio(batch["steady_pictures_per_s"], best["throughput_rps"]),
            # The job's whole run, its actor start-up and model loading included.
            "batch_end_to_end_vs_graph_http_throughput": ratio(batch["pictures_per_s"], best["throughput_rps"]),
            "basis": {
                "graph_best": {"concurrency": best["concurrency"], "rps": best["throughput_rps"]},
                "batch_steady_pictures_per_s": batch["steady_pictures_per_s"],
                "batch_end_to_end_pictures_per_s": batch["pictures_per_s"],
            },
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(args) -> int:
    from benchmarks.cli import require_bench_extra

    require_bench_extra("facegraph bench-batch")
    try:
        machine.require_loopback_only()
    except machine.NetworkNotIsolatedError as exc:
        print(f"facegraph bench-batch: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from benchmarks.run import load_config

    phase = Phase(warmup_s=0.5, measure_s=2.0) if args.quick else Phase(warmup_s=3.0, measure_s=12.0)
    out = Path(args.out)
    results = run(load_config(args.config), out, args.copies, Path(args.photos) if args.photos else None, phase)
    ratios = results["ratios"]
    print(f"facegraph bench-batch: wrote {out / 'results.json'}")
    print(f"  graph over HTTP, best: {ratios['basis']['graph_best']['rps']} pictures/s at {ratios['basis']['graph_best']['concurrency']} clients")
    batch, large = results["batch"], results["batch"]["runs"][-1]
    print(f"  facegraph batch: {batch['steady_pictures_per_s']} pictures/s once started; {batch['pictures_per_s']} end to end ({large['pictures']} pictures in {large['seconds']} s)")
    print(f"  batch_vs_graph_http_throughput: {ratios['batch_vs_graph_http_throughput']} (end to end: {ratios['batch_end_to_end_vs_graph_http_throughput']})")
    return 0


def add_parser(sub) -> None:
    bench = sub.add_parser("bench-batch", help="facegraph batch against the served graph over HTTP on the same pictures and models")
    bench.add_argument("--out", default="bench-out/batch")
    bench.add_argument("--config", help="a Serve config YAML (default: the built-in default config)")
    bench.add_argument("--copies", type=int, default=10, help="copies of each benchmark picture in the first job (the second reads twice as many)")
    bench.add_argument("--photos", help="folder of the marked real photos (default: ../shared/photos beside the repository)")
    bench.add_argument("--quick", action="store_true", help="short graph loads, for shape, not timings")
    bench.set_defaults(func=main)
