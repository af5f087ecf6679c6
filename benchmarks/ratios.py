"""The headline ratios of ``facegraph bench`` (graph against in-process and the service chain, against a
baseline config), computed from one run's results, and the targets they are checked against."""

from __future__ import annotations

from typing import Any

from facegraph.benchmarks.stats import ratio

# The chain and the graph are compared at this many clients.
CHAIN_LEVEL = 16


def _best(runs: list[dict]) -> dict | None:
    return max(runs, key=lambda r: r["throughput_rps"]) if runs else None


def _at(runs: list[dict], level: int) -> dict | None:
    exact = [r for r in runs if r["concurrency"] == level]
    if exact:
        return exact[0]
    return max(runs, key=lambda r: r["concurrency"]) if runs else None


def compute_ratios(results: dict) -> dict:
    """The headline ratios, with what each was computed from.

    With ``results["serving"]`` (``benchmarks.serving_rounds``), the graph's three headline ratios
    are the first serving mode's medians over rounds, each computed within its round at 1 and
    CHAIN_LEVEL clients; the first round's own figures (best level) stay under ``round_1``.
    """
    graph_http = results["graph"]["http"]
    graph_handle = results["graph"].get("handle", [])
    chain = results["service_chain"]["http"]
    inprocess = results["inprocess"]
    best_http, best_handle = _best(graph_http), _best(graph_handle)
    graph_c16, chain_c16 = _at(graph_http, CHAIN_LEVEL), _at(chain, CHAIN_LEVEL)
    graph_c1 = _at(graph_http, 1)
    overhead = None
    if graph_c1 and graph_c1["latency"].get("count"):
        overhead = round(graph_c1["latency"]["p50_ms"] - inprocess["p50_ms_c1"], 3)
    round_1 = {
        "graph_vs_inprocess_throughput": ratio(best_http["throughput_rps"] if best_http else None, inprocess["saturation_rps"]),
        "graph_vs_service_chain_throughput": ratio(
            graph_c16["throughput_rps"] if graph_c16 else None, chain_c16["throughput_rps"] if chain_c16 else None
        ),
        "overhead_p50_ms_c1": overhead,
    }
    serving = results.get("serving")
    medians = {k: v["median"] for k, v in serving["ratios"][serving["modes"][0]].items()} if serving else round_1
    out = {
        **medians,
        "round_1": round_1,
        "graph_handle_vs_inprocess_throughput": ratio(best_handle["throughput_rps"] if best_handle else None, inprocess["saturation_rps"]),
        "batching_gain": {name: m["batching_gain"] for name, m in results["models"].items()},
        "basis": {
            "graph_saturation": {"mode": "http", "concurrency": best_http["concurrency"] if best_http else None, "rps": best_http["throughput_rps"] if best_http else None},
            "inprocess_saturation": {"mode": inprocess["saturation_mode"], "rps": inprocess["saturation_rps"]},
            "chain_level": chain_c16["concurrency"] if chain_c16 else None,
            "graph_p50_ms_c1": graph_c1["latency"].get("p50_ms") if graph_c1 else None,
            "inprocess_p50_ms_c1": inprocess["p50_ms_c1"],
        },
    }
    baseline = results.get("baseline")
    if baseline:
        base_c16 = _at(baseline["graph"]["http"], CHAIN_LEVEL)
        out["vs_baseline"] = {
            "baseline": baseline["name"],
            "inprocess_throughput": ratio(inprocess["saturation_rps"], baseline["inprocess"]["saturation_rps"]),
            "graph_http_c16_throughput": ratio(
                graph_c16["throughput_rps"] if graph_c16 else None, base_c16["throughput_rps"] if base_c16 else None
            ),
            # On the real photos alone both detectors find every marked face: the same recognizer work.
            "inprocess_photos_throughput": ratio(
                (results.get("inprocess_photos") or {}).get("saturation_rps"), (baseline.get("inprocess_photos") or {}).get("saturation_rps")
            ),
        }
    return out


TARGETS = {
    "graph_vs_inprocess_throughput": (">=", 0.85),
    "graph_vs_service_chain_throughput": (">=", 1.0),
    "overhead_p50_ms_c1": ("<=", 15.0),
    "vs_baseline.inprocess_throughput": (">=", 3.0),
    "vs_baseline.graph_http_c16_throughput": (">=", 3.0),
}


def _lookup(ratios: dict, key: str):
    value: Any = ratios
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_targets(ratios: dict) -> dict:
    out = {}
    for key, (op, bound) in TARGETS.items():
        if key.startswith("vs_baseline.") and "vs_baseline" not in ratios:
            continue
        value = _lookup(ratios, key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"target": f"{op} {bound}", "value": value, "met": met}
    return out
