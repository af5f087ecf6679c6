"""The graph under load: a local Ray on loopback, Serve with the config's app, HTTP and handle clients."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from facegraph.benchmarks import procstat
from facegraph.benchmarks.chain import free_port
from facegraph.benchmarks.load import Phase, closed_loop, handle_sender, http_sender
from facegraph.benchmarks.pictures import Picture
from facegraph.benchmarks.profiles import RATE
from facegraph.graph.config import FacegraphConfig
from facegraph.graph.serving import DEFAULT_MODE, Mode, local_runtime_env
from facegraph.models.gpu import list_gpus


def ray_resources(config: FacegraphConfig) -> dict:
    """Logical CPUs and GPUs for ``ray.init``: what the machine has, or what the config asks if more.

    Without a real GPU, a config that declares GPU shares gets that many logical ("fake")
    GPUs so it can be scheduled; its models then run on the CPU, as the report says.
    """
    asked_cpu, asked_gpu = 0.0, 0.0
    for stage in (config.detector, config.recognizer, config.deepfake, config.ingress):
        if stage is None:
            continue
        replicas = stage.deployment.num_replicas or (stage.deployment.autoscaling_config or {}).get("max_replicas", 1)
        asked_cpu += stage.deployment.num_cpus * replicas
        asked_gpu += stage.deployment.num_gpus * replicas
    gpus = len(list_gpus())
    cpus = os.cpu_count() or 1
    return {
        "num_cpus": max(cpus, math.ceil(asked_cpu - 1e-9)),
        "num_gpus": max(gpus, math.ceil(asked_gpu - 1e-9)),
        "fake_gpus": asked_gpu > gpus,
        "logical_cpus_asked": round(asked_cpu, 3),
        "logical_gpus_asked": round(asked_gpu, 3),
    }


def _batch_counts(models: dict) -> dict[str, dict[str, int]]:
    return {stage: dict(info.get("batching", {}).get("batch_size_counts", {})) for stage, info in models.items() if info.get("configured", True) and "batching" in info}


def batch_delta(before: dict, after: dict) -> dict[str, dict]:
    """Observed batch sizes between two ``/v1/models`` answers: counts per size, batches, mean."""
    out = {}
    b, a = _batch_counts(before), _batch_counts(after)
    for stage, counts in a.items():
        delta = {size: n - b.get(stage, {}).get(size, 0) for size, n in counts.items()}
        delta = {size: n for size, n in sorted(delta.items(), key=lambda kv: int(kv[0])) if n > 0}
        batches = sum(delta.values())
        items = sum(int(size) * n for size, n in delta.items())
        out[stage] = {"batch_size_counts": delta, "batches": batches, "mean_batch_size": round(items / batches, 3) if batches else None}
    return out


class Profiler:
    """py-spy ``record`` on chosen processes for the length of one run (optional)."""

    def __init__(self, out_dir: Path, seconds: float):
        self.out_dir = out_dir
        self.seconds = seconds
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.procs: list[subprocess.Popen] = []

    def start(self, pids: dict[str, int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for role, pid in pids.items():
            self.procs.append(
                subprocess.Popen(
                    [self.exe, "record", "--pid", str(pid), "--duration", str(int(self.seconds)), "--rate", str(RATE), "--format", "raw", "--nonblocking", "--threads", "--output", str(self.out_dir / f"{role}.txt")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def wait(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def role_pids(app_name: str) -> dict[str, int]:
    """pids of the proxy, the ingress and the model replicas (first replica of each)."""
    snap = procstat.snapshot()
    pids = {}
    for pid, (name, _) in sorted(snap.items()):
        if name in ("proxy", "Ingress", "Detector", "Recognizer", "DeepfakeClassifier") and name not in pids:
            pids[name] = pid
    return pids


class GraphBench:
    """Start Ray and Serve with the config's app, then measure it over HTTP and the handle.

    ``serving`` is the mode Ray's processes start in (``graph.serving``), as ``facegraph serve`` starts them.
    """

    def __init__(self, config: FacegraphConfig, pictures: Sequence[Picture], serving: Mode = DEFAULT_MODE):
        self.config = config
        self.pictures = pictures
        self.serving = serving
        self._scratch = tempfile.TemporaryDirectory(prefix="facegraph-bench-")
        self.resources = ray_resources(config)
        self.base_url = ""
        self.handle = None
        self.startup_s = 0.0

    def start(self) -> None:
        import ray
        from ray import serve

        from facegraph.graph.app import build_app

        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process; the benchmark starts its own local Ray")
        started = time.perf_counter()
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            num_cpus=self.resources["num_cpus"],
            num_gpus=self.resources["num_gpus"],
            log_to_driver=False,
            configure_logging=False,
            runtime_env=local_runtime_env(self.serving, Path(self._scratch.name)),
        )
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        self.handle = serve.run(build_app(self.config), name=self.config.name, route_prefix="/")
        self.base_url = f"http://127.0.0.1:{port}"
        self.startup_s = round(time.perf_counter() - started, 2)

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()

    async def _models(self, session) -> dict:
        async with session.get(self.base_url + "/v1/models") as resp:
            return await resp.json()

    async def measure(
        self, levels: Sequence[int], phase: Phase, modes: Sequence[str] = ("http", "handle"), progress: bool = True, profile: tuple[int, Path] | None = None
    ) -> dict[str, list[dict]]:
        """One closed-loop run per mode and concurrency level, with batch sizes and CPU per role."""
        import aiohttp

        results: dict[str, list[dict]] = {mode: [] for mode in modes}
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
            senders = {"http": http_sender(session, self.base_url + "/v1/analyze"), "handle": handle_sender(self.handle)}
            # A few answers first: replicas build their handles and caches on the first requests.
            for picture in self.pictures[:4]:
                await senders["http"](picture)
                await senders["handle"](picture)
            for mode in modes:
                for level in levels:
                    before_models, before_cpu, t0 = await self._models(session), procstat.snapshot(), time.perf_counter()
                    profiler = None
                    if profile and mode == "http" and level == profile[0]:
                        profiler = Profiler(profile[1], phase.warmup_s + phase.measure_s)
                        profiler.start(role_pids(self.config.name))
                    run = await closed_loop(senders[mode], self.pictures, level, phase, f"graph {mode} c={level}", progress)
                    if profiler:
                        await asyncio.to_thread(profiler.wait)
                    after_cpu, wall, after_models = procstat.snapshot(), time.perf_counter() - t0, await self._models(session)
                    run["batches"] = batch_delta(before_models, after_models)
                    run["cpu_s_by_role"] = procstat.cpu_by_role(before_cpu, after_cpu, {os.getpid(): "client (bench process)"})
                    run["cpu_wall_s"] = round(wall, 2)
                    results[mode].append(run)
            replicas = {stage: info.get("replicas") for stage, info in (await self._models(session)).items() if info.get("configured", True)}
        results["replicas"] = replicas  # type: ignore[assignment]
        return results
