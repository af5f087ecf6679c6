"""The GPU benchmark: one entry point that proves every GPU claim on the machine it runs on.

    python -m facegraph.benchmarks.gpu --out DIR            # on a GPU machine (see benchmarks/gpu/README.md)
    python -m facegraph.benchmarks.gpu --dry-run --out DIR  # the same steps on a CPU machine, small sizes

Steps, each within a share of one time budget (8 minutes by default):
1. ``facegraph doctor`` for ``cuda`` and ``tensorrt``: which providers really run, what is missing.
2. Batch sweeps (1..256) of every pack model and of an ArcFace-shaped and a ViT-B/16-shaped model
   built in code, on the CPU, CUDA fp32, CUDA fp16 and TensorRT fp16 (``benchmarks/gpu/sweep.py``).
3. The served graph of ``cluster/gpu.yaml`` (four 0.25 replicas on one GPU) through ``facegraph
   bench``'s own parts: in-process, a service-per-model chain and the graph at 1, 16, 64 and 256
   clients, the batch sizes the replicas saw, ``/v1/models`` (every model's provider and CUDA
   arena limit) and ``nvidia-smi``'s memory per replica process against that limit.
Writes ``results.json`` and ``report.md`` to DIR, and the graph run's own files under DIR/graph.
The dry run swaps CUDA for the CPU in the graph's config (its GPU shares stay, as fake GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from facegraph.benchmarks.gpu.sweep import TARGETS, heavy_subjects, pack_subjects, sweep
from facegraph.benchmarks.load import Phase
from facegraph.benchmarks.models_bench import Budget
from facegraph.benchmarks.run import Plan

REPO = Path(__file__).resolve().parents[2]
GPU_CONFIG = REPO / "cluster" / "gpu.yaml"
FULL = {
    "sizes": (1, 2, 4, 8, 16, 32, 64, 128, 256),
    "sweep_min_s": 0.3,
    "sweep_max_calls": 20,
    "heavy_scale": 1.0,
    "plan": Plan(pictures=16, levels=(1, 16, 64, 256), phase=Phase(warmup_s=2.0, measure_s=8.0), models=Budget(50, 5.0, (1, 4, 16, 64), 0.5, 20), inprocess_s=6.0),
}
DRY = {
    "sizes": (1, 2, 4),
    "sweep_min_s": 0.01,
    "sweep_max_calls": 2,
    "heavy_scale": 0.05,
    "plan": Plan(pictures=4, levels=(1, 4), phase=Phase(warmup_s=0.3, measure_s=1.0), models=Budget(3, 0.5, (1, 2), 0.01, 2), inprocess_s=0.5),
}
# Shares of the budget: what the sweeps may take before the graph part starts.
SWEEP_SHARE = 0.4


def _say(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def nvidia_smi(*query: str) -> dict:
    """``nvidia-smi`` with CSV output, parsed; or why it could not run."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"ok": False, "reason": "nvidia-smi not found"}
    try:
        out = subprocess.run([exe, *query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    if out.returncode != 0:
        return {"ok": False, "reason": (out.stderr or out.stdout).strip()[-300:]}
    return {"ok": True, "rows": [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]}


def graph_config(dry_run: bool):
    """``cluster/gpu.yaml``'s application; on the dry run every model on the CPU, GPU shares kept."""
    from facegraph.graph.config import FacegraphConfig, load_serve_config

    config = load_serve_config(GPU_CONFIG)[0]
    if not dry_run:
        return config
    data = config.model_dump()
    for stage in ("detector", "recognizer", "deepfake"):
        if data.get(stage):
            data[stage]["model"]["device"] = "cpu"
    data["gallery"] = None
    return FacegraphConfig.model_validate(data)


SERVING = ("fast", "plain")

STAGE_OF_ROLE = {"Detector": "detector", "Recognizer": "recognizer", "DeepfakeClassifier": "deepfake"}


def memory_probe(graph) -> dict:
    """While the graph is up: every model replica's GPU memory (nvidia-smi) against its stage's arena limit.

    ``/v1/models`` describes one replica per stage (provider, arena limit, fraction); every
    replica of a stage has the same share. nvidia-smi's pids are the kernel's, so this must run
    in the machine's own PID namespace (the GPU run uses a network namespace only).
    """
    import httpx

    from facegraph.benchmarks import procstat

    models = httpx.get(graph.base_url + "/v1/models", timeout=60).json()
    apps = nvidia_smi("--query-compute-apps=pid,used_memory")
    used = {int(row[0]): float(row[1]) for row in apps.get("rows", []) if len(row) == 2 and row[0].isdigit()}
    replicas = []
    for pid, (role, _) in sorted(procstat.snapshot().items()):
        stage = STAGE_OF_ROLE.get(role)
        if stage is None:
            continue
        info = models.get(stage) or {}
        replicas.append(
            {
                "stage": stage,
                "pid": pid,
                "provider": info.get("provider"),
                "gpu_fraction": info.get("gpu_fraction"),
                "gpu_mem_limit_mb": info.get("gpu_mem_limit_mb"),
                "gpu_memory_used_mb": used.get(pid),
            }
        )
    stages = {k: {f: v.get(f) for f in ("family", "provider", "device", "fallbacks", "gpu_mem_limit_mb", "gpu_fraction", "replicas", "warmup_ms", "batching")} for k, v in models.items() if isinstance(v, dict) and v.get("configured", True)}
    return {"nvidia_smi": {"ok": True, "processes": len(used)} if apps.get("ok") else apps, "replicas": replicas, "stages": stages}


def run(out: Path, dry_run: bool, budget_s: float, cache: Path | None = None, progress: bool = False) -> dict:
    """Every step, within ``budget_s``; returns (and writes) the results."""
    from facegraph.benchmarks.machine import machine_info
    from facegraph.benchmarks.run import run_bench
    from facegraph.graph.config import FacegraphConfig
    from facegraph.models.doctor import diagnose

    size = DRY if dry_run else FULL
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or FacegraphConfig().cache_dir()
    results: dict = {"dry_run": dry_run, "machine": machine_info().to_json(), "budget_s": budget_s}
    results["nvidia_smi"] = nvidia_smi("--query-gpu=name,memory.total,driver_version")

    _say("doctor: cuda, tensorrt")
    results["doctor"] = {policy: diagnose(policy) for policy in ("cuda", "tensorrt")}

    _say("batch sweeps")
    deadline = started + budget_s * SWEEP_SHARE
    trt_cache = out / "trt-cache"
    trt_cache.mkdir(exist_ok=True)
    rows = []
    for subject in pack_subjects(cache) + heavy_subjects(size["heavy_scale"]):
        for target in TARGETS:
            if time.perf_counter() > deadline:
                rows.append({"model": subject.model, "part": subject.part, "target": target.name, "ran": False, "reason": "time budget for the sweeps spent"})
                continue
            row = sweep(subject, target, size["sizes"], size["sweep_min_s"], size["sweep_max_calls"], deadline, trt_cache)
            rows.append(row)
            _say(f"  {subject.model}/{subject.part} on {target.name}: " + (f"best {row['best_items_per_s']} items/s at batch {row['best_batch']}" if row["ran"] else row["reason"][:120]))
    results["sweeps"] = rows
    results["sweep_s"] = round(time.perf_counter() - started, 1)

    _say("the served graph (cluster/gpu.yaml)")
    config = graph_config(dry_run)
    # The default serving mode at every level, Ray's plain serving at the rounds' levels beside it.
    graph = run_bench(config, out / "graph", quick=dry_run, progress=progress, plan=size["plan"], detectors=False, probe=memory_probe, serving=SERVING)
    results["graph"] = {
        "config": str(GPU_CONFIG.relative_to(REPO)),
        "ratios": graph["ratios"],
        "levels": {mode: [{k: r[k] for k in ("concurrency", "throughput_rps", "latency", "batches")} for r in runs] for mode, runs in graph["graph"].items()},
        "service_chain": [{k: r[k] for k in ("concurrency", "throughput_rps", "latency")} for r in graph["service_chain"]["http"]],
        "inprocess": {k: graph["inprocess"][k] for k in ("saturation_mode", "saturation_rps", "p50_ms_c1")},
        "probe": graph["ray"].get("probe"),
        "serving": {k: graph["serving"][k] for k in ("modes", "ratios", "throughput_vs_plain")},
        "files": "graph/results.json, graph/report.md",
    }
    results["total_s"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(render(results))
    return results


def _table(header: list[str], rows: list[list]) -> list[str]:
    from facegraph.benchmarks.report import _table as table

    return table(header, rows)


def render(results: dict) -> str:
    """report.md: what ran where, the sweeps, the graph."""
    m = results["machine"]
    smi = results["nvidia_smi"]
    gpu = ", ".join(" / ".join(r) for r in smi.get("rows", [])) if smi.get("ok") else f"none ({smi.get('reason')})"
    lines = [
        "# facegraph GPU benchmark" + (" (dry run on the CPU: shape and sanity, not timings)" if results["dry_run"] else ""),
        "",
        f"Machine: {m['cpu']} x{m['cpu_count']}, {m['memory_gib']} GiB; GPU: {gpu}; onnxruntime {m['onnxruntime']}, ray {m['ray']}, {m['date']}. Total {results['total_s']} s.",
        "",
        "## Doctor",
        "",
    ]
    for policy, report in results["doctor"].items():
        fixes = "; ".join(report["fixes"]) or "-"
        lines.append(f"- `--device {policy}`: {'met' if report['ok'] else 'NOT met'}; providers working: {', '.join(report['onnxruntime']['providers_working'])}; fix: {fixes}")
    lines += ["", "## Batch sweeps (items/s; ms per call in brackets)", ""]
    sizes = sorted({p["batch_size"] for r in results["sweeps"] for p in r.get("points", [])})
    rows = []
    for r in results["sweeps"]:
        cells = {p["batch_size"]: f"{p['items_per_s']} ({p['ms_per_call']})" for p in r.get("points", [])}
        rows.append([f"{r['model']}/{r['part']}", r["target"], *(cells.get(s, "") for s in sizes), "" if r["ran"] else r.get("reason", "")[:160]])
    lines += _table(["model", "target", *(f"batch {s}" for s in sizes), "not run because"], rows)
    g = results["graph"]
    lines += ["## Served graph (`" + g["config"] + "`)", ""]
    lines += _table(
        ["system", "clients", "pictures/s", "p50 ms", "mean batch"],
        [["graph " + mode, r["concurrency"], r["throughput_rps"], r["latency"].get("p50_ms"), ", ".join(f"{s} {b['mean_batch_size']}" for s, b in r.get("batches", {}).items())] for mode, runs in g["levels"].items() for r in runs]
        + [["service chain", r["concurrency"], r["throughput_rps"], r["latency"].get("p50_ms"), ""] for r in g["service_chain"]],
    )
    lines += [f"In-process saturation: {g['inprocess']['saturation_rps']} pictures/s ({g['inprocess']['saturation_mode']}). Ratios: `{ {k: v for k, v in g['ratios'].items() if k != 'basis'} }`", ""]
    fast_vs_plain = g["serving"]["throughput_vs_plain"].get("fast", {}).get("median")
    lines += [f"Serving modes: {', '.join(g['serving']['modes'])}; the default against Ray's plain serving at the rounds' clients: x{fast_vs_plain}.", ""]
    probe = g.get("probe") or {}
    lines += ["### Replicas: provider, arena limit and GPU memory", "", f"nvidia-smi: {probe.get('nvidia_smi')}", ""]
    lines += _table(
        ["stage", "pid", "provider", "GPU fraction", "arena limit MiB", "GPU memory used MiB"],
        [[r["stage"], r["pid"], r["provider"], r["gpu_fraction"], r["gpu_mem_limit_mb"], r["gpu_memory_used_mb"]] for r in probe.get("replicas", [])],
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegraph.benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results.json, report.md and the graph run")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, small sizes")
    parser.add_argument("--budget-s", type=float, default=480.0, help="time for everything (default 8 minutes)")
    parser.add_argument("--cache", help="model cache holding the built pack (default: $FACEGRAPH_CACHE or ~/.cache/facegraph)")
    args = parser.parse_args(argv)
    from facegraph.benchmarks.machine import NetworkNotIsolatedError, require_loopback_only

    try:
        require_loopback_only()
    except NetworkNotIsolatedError as exc:
        print(f"benchmarks.gpu: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = run(Path(args.out), args.dry_run, args.budget_s, Path(args.cache) if args.cache else None, progress=not args.dry_run)
    print(f"benchmarks.gpu: wrote {args.out}/results.json and report.md in {results['total_s']} s")
    return 0
