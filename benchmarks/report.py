"""report.md of one benchmark run."""

from __future__ import annotations

from pathlib import Path

from facegraph.benchmarks.machine import NAMESPACE_HINT


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


def _serving_section(serving: dict) -> list[str]:
    """The rounds: each one's systems and ratios, and the medians per serving mode."""
    lines = [
        "## Rounds and serving modes",
        "",
        f"The ratios above are medians over {serving['rounds']} round(s) for `{serving['modes'][0]}` serving; each round measured the "
        "in-process pipeline, the service chain and the graph in every serving mode (a fresh Ray each), in alternating order.",
        "",
    ]
    rows = []
    for entry in serving["per_round"]:
        for mode, graph in entry["graph"].items():
            rows.append(
                [entry["round"], " ".join(map(str, entry["load_average"])), mode, entry["inprocess"]["saturation_rps"], entry["chain"]["c16_rps"],
                 graph["c16_rps"], graph["c1_p50_ms"], entry["inprocess"]["p50_ms_c1"]]
            )  # fmt: skip
    lines += _table(["round", "load average", "serving", "in-process pictures/s", "chain c16", "graph c16", "graph p50 c1 (ms)", "in-process p50 (ms)"], rows)
    rows = [[mode] + [serving["ratios"][mode][k]["median"] for k in serving["ratios"][mode]] + [str(serving["ratios"][mode]["graph_vs_service_chain_throughput"]["per_round"])] for mode in serving["modes"]]
    lines += _table(["serving", "graph / chain (c16)", "graph / in-process", "overhead p50 c1 (ms)", "graph / chain per round"], rows)
    return lines


def render(results: dict) -> str:
    """The whole report: the machine and the headline ratios first, then the measurements behind them, a section each."""
    lines = _preamble(results) + _headline_section(results) + _serving_section(results["serving"]) + _pictures_section(results)
    if results.get("detectors"):
        lines += _detectors_section(results["detectors"])
    if results.get("baseline"):
        lines += _baseline_section(results)
    lines += _models_section(results["models"]) + _inprocess_section(results["inprocess"]) + _load_section(results)
    if results.get("profiles"):
        lines += _profiles_section(results["profiles"])
    return "\n".join(lines) + "\n"


def _preamble(results: dict) -> list[str]:
    """The title, the machine and Ray it ran on, and how to run it again."""
    m = results["machine"]
    return [
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
    ]


def _headline_section(results: dict) -> list[str]:
    """Each target ratio against its target, then the ratios without a target, and the plots they come from."""
    ratios, targets = results["ratios"], results["targets"]
    lines = ["## Headline ratios", ""]
    lines += _table(
        ["ratio", "value", "target", "met"],
        [[k, t["value"], t["target"], {True: "yes", False: "**no**", None: "n/a"}[t["met"]]] for k, t in targets.items()]
        + ([["vs_baseline.inprocess_photos_throughput", ratios["vs_baseline"].get("inprocess_photos_throughput"), "", ""]] if ratios.get("vs_baseline") else [])
        + [["graph_handle_vs_inprocess_throughput", ratios.get("graph_handle_vs_inprocess_throughput"), "", ""]]
        + [[f"batching_gain {k}", v, "", ""] for k, v in ratios["batching_gain"].items()],
    )
    return lines + [f"Basis: `{ratios['basis']}`", "", "![throughput](throughput_vs_concurrency.png)", "", "![latency](latency_percentiles.png)", ""]


def _pictures_section(results: dict) -> list[str]:
    """What the pictures are and how the configured detector (and the baseline's, beside it) did on each."""
    v = results["pictures"]["verification"]
    photos = sum(1 for p in results["pictures"]["items"] if p.get("style") == "photo")
    lines = [
        "## Pictures",
        "",
        f"{len(results['pictures']['items']) - photos} pictures composed from scikit-image's astronaut and cameraman faces ({v['style']}), "
        f"0/1/3/8 faces, 640-1920 px, and {photos} real photos with their faces marked. The configured detector found exactly the "
        f"intended number in **{v['count_matches']}/{v['pictures']}** pictures ({v['match_rate']:.0%}); it found {v['faces_recalled']} of the "
        f"{v['faces_intended']} faces (IoU >= 0.3).",
        "",
    ]
    baseline = results.get("baseline")
    rows = []
    for i, p in enumerate(v["per_picture"]):
        row = [p["name"], p["intended"], p["found"], p["recalled"]]
        if baseline:
            b = baseline["verification"]["per_picture"][i]
            row += [b["found"], b["recalled"]]
        rows.append(row)
    header = ["picture", "intended", "found", "recalled"] + ([f"{baseline['name']}: found", "recalled"] if baseline else [])
    return lines + _table(header, rows)


def _detectors_section(d: dict) -> list[str]:
    """The bench-detectors table: what each pack detector finds and costs, and the cheapest that finds every face."""
    from facegraph.benchmarks.detectors import CURVE_HEADER, TABLE_HEADER, curve_table, floors_text, table

    lines = [
        "## Detectors (every pack detector, one picture per call, straight on the adapter)",
        "",
        f"Marked faces: {d['pictures_labelled']} pictures (photos {', '.join(d['photos']) or 'absent'}, the group photos framed in "
        f"1920, 2560 and 4000 px pictures, and scikit-image's, {d['pictures_faceless']} of them faceless); composed pictures: "
        f"{d['composed_pictures']}; the 1280x720 frame of three heads and the crowd ({d['crowd']['name']}). Small pictures have a longer "
        f"side up to {d['small_side_px']} px. Cheapest candidate that finds every marked face, with no false detection on a faceless "
        f"picture, {floors_text()}: **{d['cheapest_keeping_every_face']}**.",
        "",
    ]
    lines += _table(TABLE_HEADER, table(d))
    if d.get("size_curve"):
        lines += ["Cost against the smallest faces found (CenterFace's input sizes and tilings):", ""]
        lines += _table(CURVE_HEADER, curve_table(d))
    return lines


def _baseline_section(results: dict) -> list[str]:
    """This config against the baseline's on the same pictures: in-process, on the real photos alone, and the graph at 16 clients."""
    baseline = results["baseline"]
    vs = results["ratios"]["vs_baseline"]
    lines = [
        f"## Against the baseline ({baseline['name']})",
        "",
        f"The same pictures through the baseline config: its detector alone, the in-process pipeline and the graph at 16 clients over HTTP. "
        f"Default / baseline: in-process {vs['inprocess_throughput']}x, graph {vs['graph_http_c16_throughput']}x, in-process on the "
        f"real photos alone (both detectors find every marked face there) {vs['inprocess_photos_throughput']}x.",
        "",
    ]
    bi = baseline["inprocess"]
    rows = [
        ["in-process (best mode)", results["inprocess"]["saturation_rps"], bi["saturation_rps"]],
        ["in-process, batch 1", results["inprocess"]["sequential"]["throughput_rps"], bi["sequential"]["throughput_rps"]],
    ]
    if results.get("inprocess_photos") and baseline.get("inprocess_photos"):
        rows.append(["in-process, real photos only", results["inprocess_photos"]["saturation_rps"], baseline["inprocess_photos"]["saturation_rps"]])
    own16 = next((r for r in results["graph"].get("http", []) if r["concurrency"] == 16), None)
    base16 = baseline["graph"]["http"][0] if baseline["graph"].get("http") else None
    rows.append(["graph HTTP, 16 clients", own16["throughput_rps"] if own16 else None, base16["throughput_rps"] if base16 else None])
    return lines + _table(["pictures/s", "this config", baseline["name"]], rows)


def _models_section(models: dict) -> list[str]:
    """Each model alone at batch 1 (latency spread), then its batch sweep."""
    lines = ["## Models (straight ONNX Runtime, realistic inputs)", ""]
    rows = []
    for name, mo in models.items():
        b = mo["batch1"]
        rows.append([name, mo["family"], mo["provider"], mo["intra_op_threads"], "x".join(map(str, mo["input_shape"])), b["mean_ms"], b["min_ms"], b["max_ms"], b["std_ms"], b["p50_ms"], b["p99_ms"], b["count"]])
    lines += _table(["model", "family", "provider", "threads", "input", "mean ms", "min", "max", "std", "p50", "p99", "calls"], rows)
    rows = [[name, s["batch_size"], s["calls"], s["mean_call_ms"], s["items_per_s"]] for name, mo in models.items() for s in mo["batch_sweep"]]
    lines += _table(["model", "batch", "calls", "ms per call", "items/s"], rows)
    return lines + ["![batch curves](batch_size_curves.png)", "", "![model latency](model_latency.png)", ""]


def _inprocess_section(inprocess: dict) -> list[str]:
    """Each in-process mode (the entries with call latencies; the rest are summaries of them)."""
    rows = [
        [mode, r["batch_size"], r["intra_op_threads"], r["pictures"], r["throughput_rps"], r["call_latency"]["p50_ms"], r["call_latency"]["p99_ms"]]
        for mode, r in inprocess.items()
        if isinstance(r, dict) and "call_latency" in r
    ]
    return ["## In-process pipeline (the ceiling)", ""] + _table(["mode", "batch", "threads", "pictures", "pictures/s", "p50 ms per call", "p99 ms per call"], rows)


def _load_section(results: dict) -> list[str]:
    """The graph (HTTP and handles) and the service chain under load: answers, batches, time per stage and CPU per process."""
    systems = [
        (results["graph"].get("http", []), "graph HTTP"),
        (results["graph"].get("handle", []), "graph handle"),
        (results["service_chain"]["http"], "service chain"),
    ]
    lines = ["## Graph and service chain under load", ""]
    lines += _table(
        ["system", "clients", "answers", "errors", "pictures/s", "p50 ms", "p99 ms", "mean batch (detector, branches)"],
        [row for runs, system in systems for row in _load_rows(runs, system)],
    )
    lines += ["Observed batch-size counts (graph, HTTP):", ""]
    for r in results["graph"].get("http", []):
        lines.append(f"- {r['concurrency']} clients: " + "; ".join(f"{s}: {b['batch_size_counts']}" for s, b in r.get("batches", {}).items()))
    lines += ["", "![observed batches](observed_batch_sizes.png)", "", "### Per-stage time (mean ms, from the answers' timings_ms)", ""]
    lines += _table(
        ["system", "clients", "decode", "detect (batch)", "recognizer", "deepfake", "branches", "total", "outside total"],
        [row for runs, system in systems for row in _stage_rows(runs, system)],
    )
    lines += ["`outside total` is client latency minus the answer's own `total`: proxy, HTTP, serialisation and client.", "", "![stages](stage_times.png)", ""]
    lines += ["### CPU by process (cores busy on average over the run, top 7)", ""]
    return lines + _table(["system", "clients", "cores by process"], [row for runs, system in systems for row in _cpu_rows(runs, system)])


def _profiles_section(profiles: dict) -> list[str]:
    """Where each profiled process spent its own time (py-spy), the top frames only."""
    lines = ["## Profiles (py-spy, graph HTTP)", ""]
    for role, p in profiles.items():
        top = "; ".join(f"{f['frame']} {f['share']:.0%}" for f in p["top_self"][:6])
        lines.append(f"- **{role}** ({p['busy_thread_s']} busy thread-seconds): {top}")
    return lines + [""]


def write_report(results: dict, path: Path) -> None:
    path.write_text(render(results))
