"""Does polling ``/ready`` slow analyze traffic? Analyze latency under load in alternating windows of
one run (ratios beat absolutes here): no poller; a poller asking ``/ready`` every 100 ms; and, as the
control, a poller asking an unmatched path (404) as often, which costs the proxy and the ingress the
same HTTP work without a status call. ``ready / control`` is what the status call itself costs.

Run it inside a private network namespace with only loopback (it refuses otherwise):

    RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c \\
        'ip link set lo up && .venv/bin/python -m facegraph.benchmarks.ready_poll --out ready-out'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from facegraph.benchmarks.graph_bench import GraphBench
from facegraph.benchmarks.load import Phase, closed_loop, http_sender
from facegraph.benchmarks.machine import machine_info, require_loopback_only
from facegraph.benchmarks.pictures import picture_mix
from facegraph.graph.config import FacegraphConfig, load_serve_config


KINDS = ("none", "ready", "control")
POLLED = {"ready": "/ready", "control": "/no-such-route"}


async def _poll(session, url: str, every_s: float, seen: list[float]) -> None:
    while True:
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
        seen.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - t0)))


async def _windows(bench: GraphBench, rounds: int, seconds: float, concurrency: int, every_s: float, progress: bool) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        send = http_sender(session, bench.base_url + "/v1/analyze")
        for picture in bench.pictures[:4]:
            await send(picture)
        out = []
        for i in range(len(KINDS) * rounds):
            kind = KINDS[i % len(KINDS)]
            seen: list[float] = []
            poller = asyncio.create_task(_poll(session, bench.base_url + POLLED[kind], every_s, seen)) if kind != "none" else None
            try:
                run = await closed_loop(send, bench.pictures, concurrency, Phase(2.0, seconds), f"polls: {kind}", progress)
            finally:
                if poller is not None:
                    poller.cancel()
            out.append({"polls": kind, "analyze_p50_ms": run["latency"]["p50_ms"], "analyze_p90_ms": run["latency"]["p90_ms"],
                        "answers": run["requests"], "errors": run["errors"], "poll_answers": len(seen),
                        "poll_p50_ms": round(statistics.median(seen), 2) if seen else None})
        return out


def measure(config: FacegraphConfig, rounds: int = 3, seconds: float = 20.0, concurrency: int = 4, every_s: float = 0.1, progress: bool = True) -> dict:
    require_loopback_only()
    bench = GraphBench(config, picture_mix(16))
    bench.start()
    try:
        windows = asyncio.run(_windows(bench, rounds, seconds, concurrency, every_s, progress))
    finally:
        bench.stop()
    p50 = {kind: statistics.median(w["analyze_p50_ms"] for w in windows if w["polls"] == kind) for kind in KINDS}
    return {
        "machine": machine_info().to_json(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concurrency": concurrency,
        "poll_every_s": every_s,
        "windows": windows,
        "analyze_p50_ms": p50,
        "ratio_ready_over_none": round(p50["ready"] / p50["none"], 3),
        "ratio_control_over_none": round(p50["control"] / p50["none"], 3),
        "ratio_ready_over_control": round(p50["ready"] / p50["control"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegraph.benchmarks.ready_poll", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a Serve config YAML (default: the built-in default)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of three windows (no polls, /ready, control)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per window")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent analyze clients")
    parser.add_argument("--out", default="ready-out", help="directory for ready_poll.json")
    args = parser.parse_args(argv)
    config = load_serve_config(args.config)[0] if args.config else FacegraphConfig()
    report = measure(config, args.rounds, args.seconds, args.concurrency)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ready_poll.json").write_text(json.dumps(report, indent=2))
    for w in report["windows"]:
        polls = f", {w['poll_answers']} polls (p50 {w['poll_p50_ms']} ms)" if w["polls"] != "none" else ""
        print(f"polls {w['polls']:8s} analyze p50 {w['analyze_p50_ms']} ms, p90 {w['analyze_p90_ms']} ms, {w['answers']} answers{polls}")
    print(
        f"analyze p50, /ready polls over none: {report['ratio_ready_over_none']} (target <= 1.10); control polls over none: "
        f"{report['ratio_control_over_none']}; /ready over control: {report['ratio_ready_over_control']}; report: {out / 'ready_poll.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
