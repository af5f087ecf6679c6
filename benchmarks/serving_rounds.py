"""The headline ratios over several rounds, and the serving modes (``graph.serving``) against each other.

This machine's speed swings by a third between minutes, so one run's ratio says little. Every round
measures the in-process pipeline, the service chain at ``CHAIN_LEVEL`` clients and the graph in each
serving mode (each on a fresh local Ray, started as ``facegraph serve`` starts it) at 1 and
``CHAIN_LEVEL`` clients over HTTP; the order alternates between rounds. A ratio is computed within its
round, and ``results.json`` reports the median over rounds with every round's value beside it. The
first round is the full benchmark's own run (its levels and modes are a superset).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from facegraph.benchmarks.load import Phase
from facegraph.benchmarks.ratios import CHAIN_LEVEL
from facegraph.benchmarks.stats import median_or_none, ratio
from facegraph.graph.config import FacegraphConfig
from facegraph.graph.serving import Mode

ROUND_LEVELS = (1, CHAIN_LEVEL)
METRICS = ("graph_vs_service_chain_throughput", "graph_vs_inprocess_throughput", "overhead_p50_ms_c1")


def _at(runs: Sequence[dict], level: int) -> dict | None:
    return next((r for r in runs if r["concurrency"] == level), None)


def graph_entry(http_runs: Sequence[dict]) -> dict:
    """What a round keeps of one mode's graph runs: 1 and CHAIN_LEVEL clients."""
    c1, c16 = _at(http_runs, 1), _at(http_runs, CHAIN_LEVEL)
    return {
        "c1_rps": c1["throughput_rps"] if c1 else None,
        "c1_p50_ms": c1["latency"].get("p50_ms") if c1 else None,
        f"c{CHAIN_LEVEL}_rps": c16["throughput_rps"] if c16 else None,
        f"c{CHAIN_LEVEL}_p50_ms": c16["latency"].get("p50_ms") if c16 else None,
        "errors": {level: r.get("errors") for level, r in ((1, c1), (CHAIN_LEVEL, c16)) if r and r.get("errors")},
    }


def round_entry(number: int, inprocess: dict, chain_runs: Sequence[dict], graphs: dict[str, Sequence[dict]]) -> dict:
    chain = _at(chain_runs, CHAIN_LEVEL)
    return {
        "round": number,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "inprocess": {k: inprocess[k] for k in ("saturation_mode", "saturation_rps", "p50_ms_c1")},
        "chain": {f"c{CHAIN_LEVEL}_rps": chain["throughput_rps"] if chain else None},
        "graph": {mode: graph_entry(runs) for mode, runs in graphs.items()},
    }


def round_ratios(entry: dict) -> dict[str, dict[str, float | None]]:
    """Per mode, the three headline ratios within one round."""
    out = {}
    chain = entry["chain"][f"c{CHAIN_LEVEL}_rps"]
    for mode, graph in entry["graph"].items():
        c16, p50 = graph[f"c{CHAIN_LEVEL}_rps"], graph["c1_p50_ms"]
        out[mode] = {
            "graph_vs_service_chain_throughput": ratio(c16, chain),
            "graph_vs_inprocess_throughput": ratio(c16, entry["inprocess"]["saturation_rps"]),
            "overhead_p50_ms_c1": round(p50 - entry["inprocess"]["p50_ms_c1"], 3) if p50 is not None else None,
        }
    return out


def summarise(rounds: Sequence[dict], modes: Sequence[str]) -> dict:
    """Per mode and metric: the median over rounds and each round's value; per mode, its c16 gain over the last mode's."""
    per_round = [round_ratios(r) for r in rounds]
    out: dict = {"modes": list(modes), "rounds": len(rounds), "ratios": {}}
    for mode in modes:
        out["ratios"][mode] = {}
        for metric in METRICS:
            values = [r[mode][metric] for r in per_round if r.get(mode, {}).get(metric) is not None]
            out["ratios"][mode][metric] = {"median": median_or_none(values), "per_round": values}
    if len(modes) > 1:
        reference = modes[-1]
        out["throughput_vs_" + reference] = {
            mode: {
                "median": median_or_none([ratio(r["graph"][mode][f"c{CHAIN_LEVEL}_rps"], r["graph"][reference][f"c{CHAIN_LEVEL}_rps"]) for r in rounds]),
                "per_round": [ratio(r["graph"][mode][f"c{CHAIN_LEVEL}_rps"], r["graph"][reference][f"c{CHAIN_LEVEL}_rps"]) for r in rounds],
            }
            for mode in modes[:-1]
        }
    return out


def later_round(
    number: int,
    config: FacegraphConfig,
    pictures,
    modes: Sequence[Mode],
    phase: Phase,
    inprocess_s: float,
    measure_graph: Callable[..., tuple[dict, dict]],
    chain_c16: Callable[[], list[dict]],
    progress: bool,
) -> dict:
    """One more round: in-process, then the chain and every mode's graph, in an order that alternates by round."""
    from facegraph.benchmarks.inprocess import bench_inprocess

    print(f"[bench] round {number}: in-process, service chain and graph ({', '.join(modes)}) at 1 and {CHAIN_LEVEL} clients", file=sys.stderr, flush=True)
    inprocess = bench_inprocess(config, pictures, inprocess_s, progress)
    steps: list[str] = ["chain", *modes]
    if number % 2 == 0:
        steps.reverse()
    chain_runs: list[dict] = []
    graphs: dict[str, list[dict]] = {}
    for step in steps:
        if step == "chain":
            chain_runs = chain_c16()
        else:
            runs, _ = measure_graph(config, pictures, ROUND_LEVELS, phase, progress, serving=step, modes=("http",))
            graphs[step] = runs["http"]
    return round_entry(number, inprocess, chain_runs, {mode: graphs[mode] for mode in modes})
