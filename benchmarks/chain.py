"""Start the service-per-model chain (:mod:`benchmarks.services`) as loopback subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from facegraph.benchmarks.models_bench import stage_threads, stages_of
from facegraph.benchmarks.services import crop_spec_to_json
from facegraph.graph.config import FacegraphConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceChain:
    """Detector, recognizer and classifier services plus the gateway, each its own process.

    Each model service gets the ONNX Runtime thread count its graph replica gets, so the
    two set-ups run the same sessions; only the plumbing differs.
    """

    def __init__(self, config: FacegraphConfig, crop_specs: dict, log_dir: Path):
        self.config = config
        self.crop_specs = crop_specs
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}

    def _spawn(self, role: str, settings: dict) -> str:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        log = open(self.log_dir / f"service-{role}.log", "wb")
        self.processes[role] = subprocess.Popen(
            [sys.executable, "-m", "facegraph.benchmarks.services", role, "--port", str(port), "--settings", json.dumps(settings)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
        )
        log.close()
        return f"http://127.0.0.1:{port}"

    def _wait_healthy(self, role: str, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.processes[role].poll() is not None:
                raise RuntimeError(f"the {role} service exited at start; see {self.log_dir / f'service-{role}.log'}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the {role} service did not answer within {START_TIMEOUT_S:.0f} s")

    def start(self) -> str:
        """Start every service; returns the gateway's analyze URL."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cache = str(self.config.cache_dir())
        for stage_name, stage in stages_of(self.config).items():
            settings = {"spec": stage.model.model_dump(), "cache": cache, "threads": stage_threads(stage)}
            if stage_name == "detector":
                settings["crops"] = {k: crop_spec_to_json(v) for k, v in self.crop_specs.items()}
                settings["max_pixels"] = self.config.ingress.max_pixels
            self.urls[stage_name] = self._spawn(stage_name, settings)
        gateway = self._spawn("gateway", {"urls": dict(self.urls)})
        deadline = time.monotonic() + START_TIMEOUT_S
        for role, url in {**self.urls, "gateway": gateway}.items():
            self._wait_healthy(role, url, deadline)
        return gateway + "/v1/analyze"

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> "ServiceChain":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
