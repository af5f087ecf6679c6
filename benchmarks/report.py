"""report.md of one benchmark run."""

from __future__ import annotations

from pathlib import Path

from benchmarks.machine import NAMESPACE_HINT


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _load_rows(runs: list[dict], system: str) -> list[list]:
    rows = []
    for r in runs:
        lat = r["latency"]
        batches = r.get("batches", {})
        mean_batches = ", ".join(f"{s} {b['mean_batch_size']}" for s, b in batches.items() if b.get("mean_batch_size")) or "-"
        errors = sum(r["errors"].values())
        rows.append([system, r["concurrency"], r["requests"], errors, r["throughput_rps"], lat.get("p50_ms"), lat.get("p99_ms"), mean_batches])
    return rows


def _stage_rows(runs: list[dict], system: str) -> list[list]:
    rows = []
    for r in runs:
        st = r["stage_ms"]
        get = lambda k: st.get(k, {}).get("mean_ms")  # noqa: E731
        rows.append([system, r["concurrency"], get("decode"), get("detect"), get("recognizer"), get("deepfake"), get("branches"), get("total"), get("outside_total")])
    return rows


def _cpu_rows(runs: list[dict], system: str) -> list[list]:
    rows = []
    for r in runs:
        wall = r.get("cpu_wall_s") or 1.0
        shares = ", ".join(f"{role} {sec / wall:.2f}" for role, sec in list(r.get("cpu_s_by_role", {}).items())[:7])
        rows.append([system, r["concurrency"], shares])
    return rows


def render(results: dict) -> str:
    m = results["machine"]
    ratios, targets = results["ratios"], results["targets"]
    lines = [
        "# facegraph benchmark",
        "",
        f"*{results['caption']}*" + (" - **quick run: shape and sanity only, not timings**" if results["quick"] else ""),
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['memory_gib']} GiB, {', '.join(m['gpus']) or 'no GPU'}; {m['platform']}.",
        f"Ray ran with {results['ray']['num_cpus']} logical CPUs and {results['ray']['num_gpus']} logical GPUs"
        + (" (fake: the config declares GPU shares, the models ran on the CPU)" if results["ray"]["fake_gpus"] else "")
        + f"; Ray and Serve were up in {results['ray']['startup_s']} s. Phases (s): {results['phases_s']}.",
        "",
        "Run it (it starts Ray and loopback HTTP services, so only inside a private network namespace, as root):",
        "",
        f"    {NAMESPACE_HINT}",
        "",
        "## Headline ratios",
        "",
    ]
    lines += _table(
        ["ratio", "value", "target", "met"],
        [[k, t["value"], t["target"], {True: "yes", False: "**no**", None: "n/a"}[t["met"]]] for k, t in targets.items()]
        + [["graph_handle_vs_inprocess_throughput", ratios.get("graph_handle_vs_inprocess_throughput"), "", ""]]
        + [[f"batching_gain {k}", v, "", ""] for k, v in ratios["batching_gain"].items()],
    )
    lines += [f"Basis: `{ratios['basis']}`", "", "![throughput](throughput_vs_concurrency.png)", "", "![latency](latency_percentiles.png)", ""]

    v = results["pictures"]["verification"]
    lines += [
        "## Pictures",
        "",
        f"{len(results['pictures']['items'])} pictures composed from scikit-image's astronaut and cameraman faces ({v['style']}), "
        f"0/1/3/8 faces, 640-1920 px. The configured detector found exactly the intended number in "
        f"**{v['count_matches']}/{v['pictures']}** pictures ({v['match_rate']:.0%}); it found {v['faces_recalled']} of the "
        f"{v['faces_intended']} pasted faces (IoU >= 0.3).",
        "",
    ]
    lines += _table(["picture", "intended", "found", "recalled"], [[p["name"], p["intended"], p["found"], p["recalled"]] for p in v["per_picture"]])

    lines += ["## Models (straight ONNX Runtime, realistic inputs)", ""]
    rows = []
    for name, mo in results["models"].items():
        b = mo["batch1"]
        rows.append([name, mo["family"], mo["provider"], mo["intra_op_threads"], "x".join(map(str, mo["input_shape"])), b["mean_ms"], b["min_ms"], b["max_ms"], b["std_ms"], b["p50_ms"], b["p99_ms"], b["count"]])
    lines += _table(["model", "family", "provider", "threads", "input", "mean ms", "min", "max", "std", "p50", "p99", "calls"], rows)
    rows = [[name, s["batch_size"], s["calls"], s["mean_call_ms"], s["items_per_s"]] for name, mo in results["models"].items() for s in mo["batch_sweep"]]
    lines += _table(["model", "batch", "calls", "ms per call", "items/s"], rows)
    lines += ["![batch curves](batch_size_curves.png)", "", "![model latency](model_latency.png)", ""]

    ip = results["inprocess"]
    lines += ["## In-process pipeline (the ceiling)", ""]
    rows = [
        [mode, r["batch_size"], r["intra_op_threads"], r["pictures"], r["throughput_rps"], r["call_latency"]["p50_ms"], r["call_latency"]["p99_ms"]]
        for mode, r in ip.items()
        if isinstance(r, dict) and "call_latency" in r
    ]
    lines += _table(["mode", "batch", "threads", "pictures", "pictures/s", "p50 ms per call", "p99 ms per call"], rows)

    lines += ["## Graph and service chain under load", ""]
    rows = _load_rows(results["graph"].get("http", []), "graph HTTP") + _load_rows(results["graph"].get("handle", []), "graph handle")
    rows += _load_rows(results["service_chain"]["http"], "service chain")
    lines += _table(["system", "clients", "answers", "errors", "pictures/s", "p50 ms", "p99 ms", "mean batch (detector, branches)"], rows)
    lines += ["Observed batch-size counts (graph, HTTP):", ""]
    for r in results["graph"].get("http", []):
        lines.append(f"- {r['concurrency']} clients: " + "; ".join(f"{s}: {b['batch_size_counts']}" for s, b in r.get("batches", {}).items()))
    lines += ["", "![observed batches](observed_batch_sizes.png)", "", "### Per-stage time (mean ms, from the answers' timings_ms)", ""]
    rows = _stage_rows(results["graph"].get("http", []), "graph HTTP") + _stage_rows(results["graph"].get("handle", []), "graph handle")
    rows += _stage_rows(results["service_chain"]["http"], "service chain")
    lines += _table(["system", "clients", "decode", "detect (batch)", "recognizer", "deepfake", "branches", "total", "outside total"], rows)
    lines += ["`outside total` is client latency minus the answer's own `total`: proxy, HTTP, serialisation and client.", "", "![stages](stage_times.png)", ""]
    lines += ["### CPU by process (cores busy on average over the run, top 7)", ""]
    rows = _cpu_rows(results["graph"].get("http", []), "graph HTTP") + _cpu_rows(results["graph"].get("handle", []), "graph handle") + _cpu_rows(results["service_chain"]["http"], "service chain")
    lines += _table(["system", "clients", "cores by process"], rows)

    if results.get("profiles"):
        lines += ["## Profiles (py-spy, graph HTTP)", ""]
        for role, p in results["profiles"].items():
            top = "; ".join(f"{f['frame']} {f['share']:.0%}" for f in p["top_self"][:6])
            lines.append(f"- **{role}** ({p['busy_thread_s']} busy thread-seconds): {top}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_report(results: dict, path: Path) -> None:
    path.write_text(render(results))
