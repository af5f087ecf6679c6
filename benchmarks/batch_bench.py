"""``facegraph bench-batch``: the bulk job against the served graph over HTTP, same pictures and models, one run.

Rounds of the graph under closed-loop HTTP load (as ``facegraph bench`` loads it) and then
``facegraph batch``'s job over the same pictures written ``--copies`` and three times as many times
to folders, each on a fresh local Ray, alternating so that both meet the machine in the same
states; the last round also runs the job decoding in the other place (``batch.decode_in``). A
job's time runs from building the dataset to the last parquet file written (actor start-up and
model loading included); Ray's own start is left out of both. Writes ``results.json`` with
``ratios.batch_vs_graph_http_throughput``: the median over rounds of the job's pace once its pools
are up (from its two runs) over the graph's best in the same round; the end-to-end ratio beside it.

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

from facegraph.benchmarks import machine
from facegraph.benchmarks.graph_bench import ray_resources
from facegraph.benchmarks.load import Phase
from facegraph.benchmarks.pictures import Picture, photo_pictures, picture_mix, style_for
from facegraph.benchmarks.stats import median_or_none, ratio
from facegraph.graph.config import FacegraphConfig

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
    from facegraph.graph.batch.job import run_job

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


def _pace(config: FacegraphConfig, pictures: Sequence[Picture], copies: int, workdir: Path) -> dict:
    """The job over ``copies`` and ``3 x copies`` copies of the pictures; its pace from the pictures and time the larger run adds.

    Each run starts its own actor pools (processes, model loading); the extra pictures of the
    second over the extra time it took is the job's pace once its pools are up (``steady``).
    """
    runs = [_job(config, pictures, n, workdir) for n in (copies, 3 * copies)]
    small, large = runs
    extra_s = large["seconds"] - small["seconds"]
    steady = (large["processed"] - small["processed"]) / extra_s if extra_s > 0 else None
    return {
        "decode_in": config.batch.decode_in,
        "runs": runs,
        "pictures_per_s": large["pictures_per_s"],
        "steady_pictures_per_s": round(steady, 3) if steady else None,
        "start_up_s": round(small["seconds"] - small["processed"] / steady, 2) if steady else None,
    }


def bench_batch(config: FacegraphConfig, pictures: Sequence[Picture], copies: int, workdir: Path, other_too: bool) -> dict:
    """After a short warm-up job, the job's pace with the config's decoding place (and, ``other_too``, with the other), on one fresh local Ray."""
    import ray
    from ray.data import DataContext

    resources = ray_resources(config)
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], log_to_driver=False, configure_logging=False)
    ray_start_s = time.perf_counter() - started
    DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    other = "tasks" if config.batch.decode_in == "detector" else "detector"
    alternative = None
    try:
        # A first short job pays what only a cluster's first job pays (worker processes, cold files).
        warm_up = _job(config, pictures[:4], 1, workdir / "warm-up")
        configured = _pace(config, pictures, copies, workdir / config.batch.decode_in)
        if other_too:
            print(f"[bench-batch] again, decoding in the {other}", file=sys.stderr, flush=True)
            placed = config.model_copy(update={"batch": config.batch.model_copy(update={"decode_in": other})})
            alternative = _pace(placed, pictures, copies, workdir / other)
    finally:
        ray.shutdown()
    return {**configured, "warm_up": warm_up, "ray_start_s": round(ray_start_s, 2), "other_decode_in": alternative}


def _graph(config: FacegraphConfig, pictures: Sequence[Picture], levels: Sequence[int], phase: Phase) -> dict:
    """The served graph under closed-loop HTTP load at ``levels`` clients, on its own fresh local Ray."""
    import asyncio

    from facegraph.benchmarks.graph_bench import GraphBench

    load_before = _load()
    served = GraphBench(config, pictures)
    served.start()
    try:
        http = asyncio.run(served.measure(levels, phase, modes=("http",)))["http"]
    finally:
        served.stop()
    best = max(http, key=lambda r: r["throughput_rps"])
    return {"http": http, "best": {"concurrency": best["concurrency"], "rps": best["throughput_rps"]}, "ray": {**served.resources, "startup_s": served.startup_s}, "load_avg_before": load_before, "load_avg_after": _load()}


def run(config: FacegraphConfig, out_dir: Path, copies: int, photos: Path | None, phase: Phase, rounds: int = 3, levels: Sequence[int] = LEVELS) -> dict:
    """``rounds`` rounds of the graph then the job, alternating, so that both meet the machine in the same states.

    The first round loads the graph at every level in ``levels``, later rounds at the best of them;
    the last round also runs the job decoding in the other place. Each round's ratio is the job's
    steady pace over the graph's best in that round; ``results.json`` gives their median.
    """
    style = style_for(config.detector.model)
    pictures = picture_mix(16, style) + (photo_pictures(photos) if style == "faces" else [])
    with tempfile.TemporaryDirectory(prefix="facegraph-bench-batch-") as work:
        done = _rounds(config, pictures, copies, phase, rounds, levels, Path(work))
    info = machine.machine_info()
    results = {
        "machine": info.to_json(),
        "caption": info.caption(),
        "config": config.model_dump(mode="json"),
        "pictures": [{"name": p.name, "width": p.width, "height": p.height, "faces": p.faces, "style": p.style} for p in pictures],
        "rounds": done,
        "ratios": _ratios(config.batch.decode_in, done),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _rounds(config: FacegraphConfig, pictures: Sequence[Picture], copies: int, phase: Phase, rounds: int, levels: Sequence[int], work: Path) -> list[dict]:
    """Each round: the graph (every level first, then the first round's best), then the job; its ratios to the graph's best."""
    done: list[dict] = []
    for k in range(rounds):
        at = list(levels) if k == 0 else [done[0]["graph"]["best"]["concurrency"]]
        print(f"[bench-batch] round {k + 1}/{rounds}: {len(pictures)} pictures; the graph over HTTP at {at} clients", file=sys.stderr, flush=True)
        graph = _graph(config, pictures, at, phase)
        print(f"[bench-batch] round {k + 1}/{rounds}: facegraph batch over {copies} and {3 * copies} copies of them", file=sys.stderr, flush=True)
        batch = bench_batch(config, pictures, copies, work / f"round-{k + 1}", other_too=k == rounds - 1)
        rps = graph["best"]["rps"]
        done.append(
            {
                "graph": graph,
                "batch": batch,
                "ratio": ratio(batch["steady_pictures_per_s"], rps),
                "end_to_end_ratio": ratio(batch["pictures_per_s"], rps),
            }
        )
    return done


def _ratios(decode_in: str, done: Sequence[dict]) -> dict:
    """The job against the graph over the rounds (medians, each round's, and what they were computed from)."""
    last = done[-1]["batch"]["other_decode_in"]
    return {
        # Both at their pace once started (the graph's load excludes its start, as the job's steady pace does): the median over rounds.
        "batch_vs_graph_http_throughput": median_or_none(r["ratio"] for r in done),
        # The job's whole run over 3 x copies copies, its actor start-up and model loading included.
        "batch_end_to_end_vs_graph_http_throughput": median_or_none(r["end_to_end_ratio"] for r in done),
        # The same job decoding in the other place (batch.decode_in), against the last round's graph.
        f"batch_decode_in_{last['decode_in']}_vs_graph_http_throughput": ratio(last["steady_pictures_per_s"], done[-1]["graph"]["best"]["rps"]),
        "per_round": [r["ratio"] for r in done],
        "per_round_end_to_end": [r["end_to_end_ratio"] for r in done],
        "basis": {
            "batch_decode_in": decode_in,
            "graph_best_rps": [r["graph"]["best"]["rps"] for r in done],
            "graph_best_concurrency": [r["graph"]["best"]["concurrency"] for r in done],
            "batch_steady_pictures_per_s": [r["batch"]["steady_pictures_per_s"] for r in done],
            "batch_end_to_end_pictures_per_s": [r["batch"]["pictures_per_s"] for r in done],
            f"batch_decode_in_{last['decode_in']}_steady_pictures_per_s": last["steady_pictures_per_s"],
        },
    }


def main(args) -> int:
    from facegraph.models.extras import require

    require("facegraph bench-batch", "bench")
    try:
        machine.require_loopback_only()
    except machine.NetworkNotIsolatedError as exc:
        print(f"facegraph bench-batch: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from facegraph.benchmarks.run import load_config

    phase = Phase(warmup_s=0.5, measure_s=2.0) if args.quick else Phase(warmup_s=3.0, measure_s=12.0)
    out = Path(args.out)
    results = run(load_config(args.config), out, args.copies, Path(args.photos) if args.photos else None, phase, args.rounds)
    ratios, basis = results["ratios"], results["ratios"]["basis"]
    print(f"facegraph bench-batch: wrote {out / 'results.json'}")
    print(f"  graph over HTTP, best per round: {basis['graph_best_rps']} pictures/s at {basis['graph_best_concurrency']} clients")
    print(f"  facegraph batch once started, per round: {basis['batch_steady_pictures_per_s']} pictures/s; end to end {basis['batch_end_to_end_pictures_per_s']}")
    print(f"  batch_vs_graph_http_throughput (median of rounds {ratios['per_round']}): {ratios['batch_vs_graph_http_throughput']} (end to end: {ratios['batch_end_to_end_vs_graph_http_throughput']})")
    other = results["rounds"][-1]["batch"]["other_decode_in"]
    print(f"  decoding in the {other['decode_in']} instead (last round): {other['steady_pictures_per_s']} pictures/s once started; {other['pictures_per_s']} end to end")
    return 0


def add_parser(sub) -> None:
    bench = sub.add_parser("bench-batch", help="facegraph batch against the served graph over HTTP on the same pictures and models")
    bench.add_argument("--out", default="bench-out/batch")
    bench.add_argument("--config", help="a Serve config YAML (default: the built-in default config)")
    bench.add_argument("--copies", type=int, default=10, help="copies of each benchmark picture in the first job (the second reads three times as many)")
    bench.add_argument("--rounds", type=int, default=3, help="rounds of the graph then the job, alternating; the ratio is their median")
    bench.add_argument("--photos", help="folder of the marked real photos (default: ../shared/photos beside the repository)")
    bench.add_argument("--quick", action="store_true", help="short graph loads, for shape, not timings")
    bench.set_defaults(func=main)
