"""A bounded soak: steady load on the graph for a chosen time, with every replica's memory along the way.

Run it inside a private network namespace with only loopback (it refuses otherwise):

    RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c \\
        'ip link set lo up && .venv/bin/python -m facegraph.benchmarks.soak --seconds 600 --out soak-out'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

from facegraph.benchmarks.graph_bench import GraphBench
from facegraph.benchmarks.load import Phase, closed_loop, http_sender
from facegraph.benchmarks.machine import machine_info, require_loopback_only
from facegraph.benchmarks.pictures import picture_mix
from facegraph.graph.config import FacegraphConfig, load_serve_config

_SERVE_PROCESS = re.compile(r"ray::(ServeReplica:[^:\s]*:\w+|ProxyActor|ServeController)")


def serve_memory() -> dict[str, float]:
    """Resident MiB of every Serve process here, keyed ``name[pid]`` (replicas, proxy, controller)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            match = _SERVE_PROCESS.search(cmdline)
            if not match:
                continue
            rss_kb = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        out[f"{match.group(1)}[{entry.name}]"] = round(rss_kb / 1024, 1)
    return dict(sorted(out.items()))


async def _sample(samples: list[dict], started: float, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        samples.append({"t_s": round(time.perf_counter() - started, 1), "mb": await asyncio.to_thread(serve_memory)})


async def _load(bench: GraphBench, seconds: float, concurrency: int, progress: bool, sample_s: float) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        send = http_sender(session, bench.base_url + "/v1/analyze")
        for picture in bench.pictures[:4]:  # warm the replicas before the first reading
            await send(picture)
        start = serve_memory()
        samples = [{"t_s": 0.0, "mb": start}]
        sampler = asyncio.create_task(_sample(samples, time.perf_counter(), sample_s))
        try:
            run = await closed_loop(send, bench.pictures, concurrency, Phase(0.0, seconds), f"soak c={concurrency}", progress)
        finally:
            sampler.cancel()
    end = serve_memory()
    return {"run": run, "memory_start_mb": start, "memory_end_mb": end, "memory_samples": samples}


def _growth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - mb, 1) for name, mb in before.items() if name in after}


def soak(config: FacegraphConfig, seconds: float, concurrency: int, progress: bool = True, sample_s: float = 30.0) -> dict:
    require_loopback_only()
    bench = GraphBench(config, picture_mix(16))
    bench.start()
    try:
        result = asyncio.run(_load(bench, seconds, concurrency, progress, sample_s))
    finally:
        bench.stop()
    samples = result["memory_samples"]
    middle = min(samples, key=lambda s: abs(s["t_s"] - seconds / 2))["mb"]
    restarted = sorted(set(result["memory_start_mb"]) ^ set(result["memory_end_mb"]))
    return {
        "machine": machine_info().to_json(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": seconds,
        "concurrency": concurrency,
        **result,
        "memory_growth_mb": _growth(result["memory_start_mb"], result["memory_end_mb"]),
        # Growth over the second half only: a leak keeps climbing, a warming arena levels off.
        "memory_growth_second_half_mb": _growth(middle, result["memory_end_mb"]),
        "processes_replaced": restarted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegraph.benchmarks.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to keep the load on")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--config", help="a Serve config YAML (default: the built-in default)")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds between memory readings")
    parser.add_argument("--out", default="soak-out", help="directory for soak.json")
    args = parser.parse_args(argv)
    config = load_serve_config(args.config)[0] if args.config else FacegraphConfig()
    report = soak(config, args.seconds, args.concurrency, sample_s=args.sample_every)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    run = report["run"]
    print(f"{run['requests']} answers in {args.seconds:.0f} s ({run['throughput_rps']} /s), errors {run['errors'] or 'none'}")
    print(f"  {'process':48s} {'start':>8} {'middle':>8} {'end':>8} MiB")
    for name, start in report["memory_start_mb"].items():
        end = report["memory_end_mb"].get(name)
        middle = round(end - report["memory_growth_second_half_mb"][name], 1) if name in report["memory_growth_second_half_mb"] else None
        print(f"  {name:48s} {start:8.1f} {middle if middle is not None else '-':>8} {end if end is not None else 'gone':>8}")
    print(f"report: {out / 'soak.json'}")
    return 0 if not run["errors"] and not report["processes_replaced"] else 1


if __name__ == "__main__":
    sys.exit(main())
