"""``facegraph bench``: per-model figures, the in-process ceiling, a service-per-model chain and the
graph over HTTP and handles, on the same models and pictures, in one run.

Writes ``results.json``, ``report.md`` and PNG plots to ``--out``. It starts Ray and plain
HTTP services, so it refuses to run unless the only network interface up is loopback:

    RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c \\
        'ip link set lo up && .venv/bin/facegraph bench --out bench-out'
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from facegraph.benchmarks import machine
from facegraph.benchmarks.load import Phase
from facegraph.benchmarks.models_bench import FULL, QUICK, Budget, bench_models
from facegraph.benchmarks.pictures import Picture, Style, Verification, photo_pictures, picture_mix, style_for, verify
from facegraph.benchmarks.ratios import CHAIN_LEVEL, check_targets, compute_ratios
from facegraph.benchmarks.serving_rounds import ROUND_LEVELS, later_round, round_entry, summarise as summarise_rounds
from facegraph.graph.config import FacegraphConfig, load_serve_config
from facegraph.graph.serving import DEFAULT_MODE, Mode
from facegraph.models.types import CropSpec

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """How much of everything a run measures."""

    pictures: int
    levels: tuple[int, ...]
    phase: Phase
    models: Budget
    inprocess_s: float


FULL_PLAN = Plan(pictures=16, levels=(1, 4, 16, 64), phase=Phase(warmup_s=3.0, measure_s=12.0), models=FULL, inprocess_s=12.0)
QUICK_PLAN = Plan(
    pictures=8,
    levels=(1, 4, 16),
    phase=Phase(warmup_s=0.5, measure_s=2.0),
    models=QUICK,
    inprocess_s=1.0,
)


def load_config(source: Any) -> FacegraphConfig:
    """A Serve config YAML path, a FacegraphConfig, a dict of its fields, or None (the default config)."""
    if source is None:
        return FacegraphConfig()
    if isinstance(source, FacegraphConfig):
        return source
    if isinstance(source, dict):
        return FacegraphConfig.model_validate(source)
    return load_serve_config(source)[0]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _verification(checks, style: str) -> dict:
    return {
        "style": style,
        "pictures": len(checks),
        "count_matches": sum(c.matches for c in checks),
        "match_rate": round(sum(c.matches for c in checks) / len(checks), 3) if checks else None,
        "faces_intended": sum(c.intended for c in checks),
        "faces_recalled": sum(c.recalled for c in checks),
        "per_picture": [{"name": c.name, "intended": c.intended, "found": c.found, "recalled": c.recalled} for c in checks],
    }


def _measure_graph(
    config: FacegraphConfig, pictures, levels, phase, progress: bool, profile=None, probe=None, serving: Mode = DEFAULT_MODE, modes=None
) -> tuple[dict, dict]:
    """Start the graph for one config in one serving mode, load it, stop it: (runs by client kind, Ray facts).

    ``modes``: the client kinds ("http", "handle"; default both when several levels are asked).
    ``probe(graph)``, when given, runs after the load while the graph is still up (e.g. to read
    each replica's GPU memory); what it returns is kept under the facts' ``probe``.
    """
    from facegraph.benchmarks.graph_bench import GraphBench

    graph = GraphBench(config, pictures, serving)
    graph.start()
    try:
        modes = modes or (("http", "handle") if len(levels) > 1 else ("http",))
        runs = asyncio.run(graph.measure(levels, phase, modes=modes, progress=progress, profile=profile))
        probed = probe(graph) if probe is not None else None
    finally:
        graph.stop()
    facts = {**graph.resources, "serving": serving, "startup_s": graph.startup_s, "replicas": runs.pop("replicas", {})}
    if probe is not None:
        facts["probe"] = probed
    return runs, facts


def _baseline(config: FacegraphConfig, name: str, pictures, photos, plan: Plan, progress: bool) -> dict:
    """The baseline config on the same pictures: its detector alone, in-process, and the graph at CHAIN_LEVEL clients."""
    from facegraph.benchmarks.inprocess import bench_inprocess
    from facegraph.benchmarks.models_bench import bench_one, load_stage

    _say(f"[bench] baseline {name}: its detector, in-process, graph at {CHAIN_LEVEL} clients")
    detector = load_stage(config, "detector")
    model = bench_one("detector", detector, [p.rgb() for p in pictures], plan.models, progress)
    checks = verify(detector.adapter, pictures)
    del detector
    gc.collect()
    inprocess = bench_inprocess(config, pictures, plan.inprocess_s, progress)
    inprocess_photos = bench_inprocess(config, photos, plan.inprocess_s / 2, progress) if photos else None
    runs, ray_facts = _measure_graph(config, pictures, (CHAIN_LEVEL,), plan.phase, progress)
    return {
        "name": name,
        "config": config.model_dump(mode="json"),
        "detector": model,
        "verification": _verification(checks, "faces"),
        "inprocess": inprocess,
        "inprocess_photos": inprocess_photos,
        "graph": runs,
        "ray": ray_facts,
    }


class _Laps:
    """Seconds spent in each phase of a run, for ``phases_s``: each lap runs from the previous one."""

    def __init__(self) -> None:
        self._started = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 2)
        self._last = now

    def summary(self) -> dict[str, float]:
        return {**self.phases, "total": round(time.perf_counter() - self._started, 2)}


@dataclass(frozen=True)
class _BenchRun:
    """What every phase of one run shares: the config and plan, the pictures, where files go, and the phase clock.

    The phases run one after another so that none shares the CPU with another; each laps the clock as it ends.
    """

    config: FacegraphConfig
    plan: Plan
    style: Style
    pictures: list[Picture]
    real: list[Picture]
    out_dir: Path
    progress: bool
    laps: _Laps

    @classmethod
    def prepare(cls, config: FacegraphConfig, plan: Plan, photos: Path | None, out_dir: Path, progress: bool) -> _BenchRun:
        """Compose the plan's pictures in the detector's style; the clock starts before, so composing counts as ``models``."""
        laps = _Laps()
        style = style_for(config.detector.model)
        # Real photos join composed faces (not the fixture detectors' squares).
        real = photo_pictures(photos) if style == "faces" else []
        return cls(config, plan, style, picture_mix(plan.pictures, style) + real, real, out_dir, progress, laps)

    def models(self) -> tuple[dict, list[Verification], dict[str, CropSpec]]:
        """Each model alone, and what the detector finds on the pictures.

        The models are let go before the next phase; only the branches' crop specs are kept, for the service chain.
        """
        _say(f"[bench] {len(self.pictures)} pictures ({self.style}, {len(self.real)} of them real photos); measuring each model")
        model_results, loaded = bench_models(self.config, self.pictures, self.plan.models, self.progress)
        checks = verify(loaded["detector"].adapter, self.pictures)
        crop_specs = {name: m.adapter.crop_spec for name, m in loaded.items() if name != "detector"}
        del loaded
        gc.collect()
        self.laps.lap("models")
        return model_results, checks, crop_specs

    def pack_detectors(self, photos: Path | None, quick: bool) -> dict:
        """The bench-detectors table: every pack detector on marked photos and composed pictures."""
        from facegraph.benchmarks.detectors import bench_detectors

        _say("[bench] every pack detector on marked photos and composed pictures")
        table = bench_detectors(photos, quick=quick, progress=self.progress, cache=self.config.cache_dir())
        self.laps.lap("detectors")
        return table

    def inprocess(self, with_photos: bool) -> tuple[dict, dict | None]:
        """The in-process pipeline on every picture (the ceiling), and on the real photos alone when ``with_photos``."""
        from facegraph.benchmarks.inprocess import bench_inprocess

        _say("[bench] in-process pipeline (the ceiling)")
        everything = bench_inprocess(self.config, self.pictures, self.plan.inprocess_s, self.progress)
        photos = bench_inprocess(self.config, self.real, self.plan.inprocess_s / 2, self.progress) if self.real and with_photos else None
        gc.collect()
        self.laps.lap("inprocess")
        return everything, photos

    def chain(self, crop_specs: dict[str, CropSpec], levels: Sequence[int]) -> list[dict]:
        """Start the service-per-model chain, load it over HTTP at each level, stop it."""
        from facegraph.benchmarks.chain import ServiceChain

        with ServiceChain(self.config, crop_specs, self.out_dir / "logs") as chain:
            url = chain.start()
            return asyncio.run(_chain_loads(url, self.pictures, levels, self.plan.phase, chain.pids(), self.progress))

    def service_chain(self, crop_specs: dict[str, CropSpec]) -> list[dict]:
        """The chain at the plan's levels and, because the chain ratio is defined there, at CHAIN_LEVEL clients."""
        _say("[bench] service-per-model chain over HTTP")
        runs = self.chain(crop_specs, sorted(set(self.plan.levels) | {CHAIN_LEVEL}))
        self.laps.lap("service_chain")
        return runs

    def graphs(self, serving: Sequence[Mode], profile: bool, probe=None) -> tuple[dict, dict, dict[str, list[dict]]]:
        """The graph in the first serving mode at every level and client kind, the other modes at ROUND_LEVELS over HTTP.

        Returns:
            The first mode's runs by client kind, its Ray facts, and every mode's HTTP runs (the first round's graphs).
        """
        primary = serving[0]
        _say(f"[bench] starting Ray and the graph ({primary} serving)")
        profile_at = (max(self.plan.levels) if CHAIN_LEVEL not in self.plan.levels else CHAIN_LEVEL, self.out_dir / "profiles") if profile else None
        runs, ray_facts = _measure_graph(self.config, self.pictures, self.plan.levels, self.plan.phase, self.progress, profile_at, probe, serving=primary)
        graphs = {primary: runs["http"]}
        for mode in serving[1:]:
            _say(f"[bench] the graph in {mode} serving at {ROUND_LEVELS} clients")
            graphs[mode] = _measure_graph(self.config, self.pictures, ROUND_LEVELS, self.plan.phase, self.progress, serving=mode, modes=("http",))[0]["http"]
        self.laps.lap("graph")
        return runs, ray_facts, graphs

    def later_rounds(self, rounds: int, serving: Sequence[Mode], crop_specs: dict[str, CropSpec]) -> list[dict]:
        """Rounds 2 to ``rounds`` of the headline ratios (``benchmarks.serving_rounds``); the first is the run itself."""
        entries = [
            later_round(
                number,
                self.config,
                self.pictures,
                serving,
                self.plan.phase,
                self.plan.inprocess_s / 2,
                _measure_graph,
                lambda: self.chain(crop_specs, [CHAIN_LEVEL]),
                self.progress,
            )
            for number in range(2, rounds + 1)
        ]
        if rounds > 1:
            self.laps.lap("rounds")
        return entries

    def baseline(self, name: str, config: FacegraphConfig) -> dict:
        """The baseline config on the same pictures (see ``_baseline``)."""
        result = _baseline(config, name, self.pictures, self.real, self.plan, self.progress)
        self.laps.lap("baseline")
        return result


def run_bench(
    config: FacegraphConfig,
    out_dir: Path,
    quick: bool,
    progress: bool = True,
    profile: bool = False,
    baseline: tuple[str, FacegraphConfig] | None = None,
    photos: Path | None = None,
    plan: Plan | None = None,
    detectors: bool = True,
    probe=None,
    serving: Sequence[Mode] = (DEFAULT_MODE,),
    rounds: int = 1,
) -> dict:
    """Every part of the benchmark, in an order that keeps them from sharing the CPU.

    ``plan`` overrides the quick or full plan; ``detectors`` runs the bench-detectors table;
    ``probe`` is handed to the graph run (see ``_measure_graph``). ``serving``: the serving modes,
    the first measured in full, the others at 1 and 16 clients in every round; ``rounds``: how many
    rounds the headline ratios are the median of (``benchmarks.serving_rounds``).
    """
    plan = plan or (QUICK_PLAN if quick else FULL_PLAN)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine.machine_info()
    bench = _BenchRun.prepare(config, plan, photos, out_dir, progress)
    model_results, checks, crop_specs = bench.models()
    detector_table = bench.pack_detectors(photos, quick) if detectors and config.detector.model.pack else None
    inprocess, inprocess_photos = bench.inprocess(with_photos=baseline is not None)
    chain_runs = bench.service_chain(crop_specs)
    graph_runs, ray_facts, graphs = bench.graphs(serving, profile, probe)
    round_entries = [round_entry(1, inprocess, chain_runs, graphs), *bench.later_rounds(rounds, serving, crop_specs)]
    baseline_results = bench.baseline(*baseline) if baseline is not None else None
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "quick": quick,
        "machine": info.to_json(),
        "caption": info.caption(),
        "config": config.model_dump(mode="json"),
        "ray": ray_facts,
        "plan": {"levels": list(plan.levels), "warmup_s": plan.phase.warmup_s, "measure_s": plan.phase.measure_s, "pictures": len(bench.pictures)},
        "pictures": {"items": [_picture_entry(p) for p in bench.pictures], "verification": _verification(checks, bench.style)},
        "models": model_results,
        "detectors": detector_table,
        "inprocess": inprocess,
        "inprocess_photos": inprocess_photos,
        "service_chain": {"http": chain_runs},
        "graph": graph_runs,
        "serving": {**summarise_rounds(round_entries, serving), "per_round": round_entries},
        "baseline": baseline_results,
    }
    results["ratios"] = compute_ratios(results)
    results["targets"] = check_targets(results["ratios"])
    results["phases_s"] = bench.laps.summary()
    _write_outputs(results, out_dir, profile)
    return results


def _picture_entry(picture: Picture) -> dict:
    return {"name": picture.name, "width": picture.width, "height": picture.height, "faces": picture.faces, "style": picture.style, "jpeg_bytes": len(picture.jpeg)}


def _write_outputs(results: dict, out_dir: Path, profile: bool) -> None:
    """Add the profiles' summary, then write the plots, ``results.json`` and ``report.md``.

    ``results.json`` is written before the report, so a report that fails still leaves the numbers,
    and again once the files list names the report.
    """
    if profile:
        from facegraph.benchmarks.profiles import summarise

        results["profiles"] = summarise(out_dir / "profiles")

    from facegraph.benchmarks.plots import write_plots
    from facegraph.benchmarks.report import write_report

    results["files"] = {"plots": write_plots(results, out_dir)}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, out_dir / "report.md")
    results["files"]["results"] = "results.json"
    results["files"]["report"] = "report.md"
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))


async def _chain_loads(url: str, pictures, levels: Sequence[int], phase: Phase, pids: dict[str, int], progress: bool) -> list[dict]:
    import aiohttp

    from facegraph.benchmarks import procstat
    from facegraph.benchmarks.load import closed_loop, http_sender

    labels = {pid: f"service {role}" for role, pid in pids.items()}
    labels[os.getpid()] = "client (bench process)"
    runs = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)) as session:
        send = http_sender(session, url)
        for picture in pictures[:4]:
            await send(picture)
        for level in levels:
            before, t0 = procstat.snapshot(), time.perf_counter()
            run = await closed_loop(send, pictures, level, phase, f"chain c={level}", progress)
            run["cpu_s_by_role"] = procstat.cpu_by_role(before, procstat.snapshot(), labels)
            run["cpu_wall_s"] = round(time.perf_counter() - t0, 2)
            runs.append(run)
    return runs


def main(args) -> int:
    """Entry of ``facegraph bench`` (``args``: quick, out, config; optional profile)."""
    try:
        machine.require_loopback_only()
    except machine.NetworkNotIsolatedError as exc:
        _say(f"facegraph bench: {exc}")
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = load_config(getattr(args, "config", None))
    baseline_path = getattr(args, "baseline", None)
    baseline = (Path(baseline_path).stem, load_config(baseline_path)) if baseline_path else None
    photos = getattr(args, "photos", None)
    out_dir = Path(getattr(args, "out", None) or "bench-out")
    quick = bool(getattr(args, "quick", False))
    rounds = getattr(args, "rounds", None) or (1 if quick else 3)
    results = run_bench(
        config,
        out_dir,
        quick,
        progress=True,
        profile=bool(getattr(args, "profile", False)),
        baseline=baseline,
        photos=Path(photos) if photos else None,
        serving=getattr(args, "serving", None) or (DEFAULT_MODE,),
        rounds=rounds,
        detectors=not getattr(args, "no_detectors", False),
    )
    ratios = results["ratios"]
    print(f"facegraph bench: wrote {out_dir / 'results.json'}, {out_dir / 'report.md'} and {len(results['files']['plots'])} plots")
    serving = results["serving"]
    print(f"  medians of {serving['rounds']} round(s), {serving['modes'][0]} serving:")
    for key, target in results["targets"].items():
        met = ", met" if target["met"] else ", not met" if target["met"] is False else ""
        print(f"  {key}: {target['value']} (target {target['target']}{met})")
    for mode in serving["modes"][1:]:
        print(f"  {mode} serving: " + ", ".join(f"{k} {v['median']}" for k, v in serving["ratios"][mode].items()))
    for mode, gain in serving.get("throughput_vs_" + serving["modes"][-1], {}).items():
        print(f"  {mode} vs {serving['modes'][-1]} at {CHAIN_LEVEL} clients: {gain['median']} (per round {gain['per_round']})")
    print(f"  batching_gain: {ratios['batching_gain']}")
    if "vs_baseline" in ratios:
        print(f"  on the real photos alone, in-process vs {baseline[0]}: {ratios['vs_baseline']['inprocess_photos_throughput']}")
    return 0
