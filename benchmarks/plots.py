"""PNG figures of one benchmark run; every figure carries the machine, versions and date."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = (("graph", "http", "graph, HTTP", "C0"), ("graph", "handle", "graph, handle", "C1"), ("service_chain", "http", "service chain, HTTP", "C2"))
STAGE_COLOURS = {"detector": "C0", "recognizer": "C1", "deepfake": "C2"}


def _runs(results: dict, system: str, mode: str) -> list[dict]:
    return sorted(results.get(system, {}).get(mode, []), key=lambda r: r["concurrency"])


def _finish(fig, results: dict, path: Path, title: str) -> str:
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.01, results["caption"], fontsize=6.5, color="0.3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _concurrency_axis(ax, levels: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels)
    ax.set_xticklabels([str(x) for x in levels])
    ax.set_xlabel("concurrent clients")
    ax.grid(True, alpha=0.3)


def throughput_plot(results: dict, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    levels = results["plan"]["levels"]
    for system, mode, label, colour in SYSTEMS:
        runs = _runs(results, system, mode)
        if runs:
            ax.plot([r["concurrency"] for r in runs], [r["throughput_rps"] for r in runs], "o-", label=label, color=colour)
    inprocess = results["inprocess"]
    for key, style in (("sequential", ":"), ("batched", "--"), ("parallel_threads", "-.")):
        if key in inprocess:
            what = f"{inprocess[key]['workers']} threads" if "workers" in inprocess[key] else f"batch {inprocess[key]['batch_size']}"
            ax.axhline(inprocess[key]["throughput_rps"], linestyle=style, color="0.4", label=f"in-process, {key.replace('_', ' ')} ({what})")
    _concurrency_axis(ax, sorted(set(levels) | {r["concurrency"] for r in _runs(results, "service_chain", "http")}))
    ax.set_ylabel("pictures per second")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _finish(fig, results, path, "Throughput vs concurrency (picture mix: 0/1/3/8 faces, 640-1920 px)")


def latency_plot(results: dict, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    for system, mode, label, colour in SYSTEMS:
        runs = [r for r in _runs(results, system, mode) if r["latency"].get("count")]
        if runs:
            xs = [r["concurrency"] for r in runs]
            ax.plot(xs, [r["latency"]["p50_ms"] for r in runs], "o-", color=colour, label=f"{label} p50")
            ax.plot(xs, [r["latency"]["p99_ms"] for r in runs], "s--", color=colour, alpha=0.7, label=f"{label} p99")
    inprocess = results["inprocess"]["sequential"]["call_latency"]
    ax.plot([1], [inprocess["p50_ms"]], "k*", markersize=12, label="in-process p50 (one at a time)")
    ax.plot([1], [inprocess["p99_ms"]], "kx", markersize=10, label="in-process p99")
    _concurrency_axis(ax, results["plan"]["levels"])
    ax.set_yscale("log")
    ax.set_ylabel("latency per picture (ms, log)")
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, results, path, "Latency percentiles vs concurrency")


def batch_curves_plot(results: dict, path: Path) -> str:
    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        sizes = [s["batch_size"] for s in m["batch_sweep"]]
        ax.plot(sizes, [s["items_per_s"] for s in m["batch_sweep"]], "o-", color=STAGE_COLOURS.get(name, "C3"), label="items/s")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("items per second")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        twin.plot(sizes, [s["mean_call_ms"] for s in m["batch_sweep"]], "s--", color="0.5", label="ms per call")
        twin.set_ylabel("ms per call", color="0.4")
        ax.set_title(f"{name}: {m['family']} ({m['intra_op_threads']} thread{'s' if m['intra_op_threads'] != 1 else ''})\nbatching gain x{m['batching_gain']}", fontsize=9)
    return _finish(fig, results, path, "Batch-size curves per model (ONNX Runtime, realistic inputs)")


def model_latency_plot(results: dict, path: Path) -> str:
    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        b = m["batch1"]
        keys = ["min_ms", "p50_ms", "mean_ms", "p99_ms", "max_ms"]
        ax.bar(range(len(keys)), [b[k] for k in keys], color=STAGE_COLOURS.get(name, "C3"), alpha=0.8)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([k[:-3] for k in keys])
        ax.set_ylabel("ms per call (batch 1)")
        ax.set_title(f"{name}: {m['family']}\nstd {b['std_ms']:.2f} ms over {b['count']} calls", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, results, path, "Per-model latency at batch 1")


def observed_batches_plot(results: dict, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode, style in (("http", "o-"), ("handle", "s--")):
        runs = _runs(results, "graph", mode)
        stages = sorted({s for r in runs for s in r.get("batches", {})})
        for stage in stages:
            points = [(r["concurrency"], r["batches"][stage]["mean_batch_size"]) for r in runs if r["batches"].get(stage, {}).get("mean_batch_size")]
            if points:
                ax.plot(*zip(*points), style, color=STAGE_COLOURS.get(stage, "C3"), label=f"{stage} ({mode})")
    _concurrency_axis(ax, results["plan"]["levels"])
    ax.set_ylabel("mean items per model call")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _finish(fig, results, path, "Observed batch sizes in the graph (/v1/models deltas)")


def stage_times_plot(results: dict, path: Path) -> str:
    runs = _runs(results, "graph", "http")
    fig, ax = plt.subplots(figsize=(8, 5))
    parts = {"decode + detect (in detector)": [], "detector queue + hops": [], "branches (recognizer | deepfake)": [], "outside the ingress (proxy, HTTP, client)": []}
    for r in runs:
        st = r["stage_ms"]
        mean = lambda k: st.get(k, {}).get("mean_ms", 0.0)  # noqa: E731
        in_detector = mean("decode") + mean("detect")
        before_branches = max(mean("total") - mean("branches"), 0.0)
        parts["decode + detect (in detector)"].append(min(in_detector, before_branches))
        parts["detector queue + hops"].append(max(before_branches - in_detector, 0.0))
        parts["branches (recognizer | deepfake)"].append(mean("branches"))
        parts["outside the ingress (proxy, HTTP, client)"].append(max(r["latency"].get("mean_ms", 0.0) - mean("total"), 0.0))
    xs = list(range(len(runs)))
    bottom = [0.0] * len(runs)
    for (label, values), colour in zip(parts.items(), ("C0", "C7", "C1", "C3")):
        ax.bar(xs, values, bottom=bottom, label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r['concurrency']} clients" for r in runs])
    ax.set_ylabel("mean ms per picture")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, results, path, "Where a picture's time goes in the graph (HTTP, from timings_ms)")


def write_plots(results: dict, out_dir: Path) -> list[str]:
    """Every figure of the run; returns their file names (relative to ``out_dir``)."""
    return [
        throughput_plot(results, out_dir / "throughput_vs_concurrency.png"),
        latency_plot(results, out_dir / "latency_percentiles.png"),
        batch_curves_plot(results, out_dir / "batch_size_curves.png"),
        model_latency_plot(results, out_dir / "model_latency.png"),
        observed_batches_plot(results, out_dir / "observed_batch_sizes.png"),
        stage_times_plot(results, out_dir / "stage_times.png"),
    ]
