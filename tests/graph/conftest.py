"""Graph tests: a real local Ray Serve per module (fake GPUs), real HTTP and real handles."""

from __future__ import annotations

import inspect
import os
import socket
import struct
import tempfile
from pathlib import Path

import pytest

from facegraph.graph.serving import DEFAULT_MODE, local_runtime_env
from tests.fixture_models import fixture_path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Galleries of the test apps live in a throwaway folder, never in the user's data folder.
os.environ.setdefault("FACEGRAPH_DATA", tempfile.mkdtemp(prefix="facegraph-test-data-"))

FIXTURE_CONFIG = {
    "name": "facegraph",
    "detector": {
        "model": {"family": "yolov8-face", "path": fixture_path("square-yolov8-face"), "settings": {"score_threshold": 0.3}},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.25, "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
    },
    "recognizer": {
        "model": {"family": "arcface", "path": fixture_path("pooled-arcface")},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.25, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}},
    },
    "deepfake": {
        "model": {"family": "image-classifier", "path": fixture_path("rgb-classifier")},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.5, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}},
    },
}


def _sockets_by_inode() -> dict[str, int]:
    owners = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = int(proc.name)
        except OSError:
            continue
    return owners


def listeners() -> list[tuple[str, int, int | None, str]]:
    """Every listening TCP socket here: (address, port, the owning process and its command line)."""
    owners = _sockets_by_inode()
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            words = [struct.pack("<I", int(hex_address[i : i + 8], 16)) for i in range(0, len(hex_address), 8)]
            address = socket.inet_ntop(family, b"".join(words))
            pid = owners.get(fields[9])
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, TypeError):
                command = ""
            found.append((address, int(hex_port, 16), pid, command))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int = 4, num_gpus: int = 1, temp_dir: str | None = None, serving: str = DEFAULT_MODE):
    """A local Ray on loopback whose processes serve in ``serving`` mode, as ``facegraph serve`` starts them."""
    import ray

    if not ray.is_initialized():
        ray.init(
            _temp_dir=temp_dir,
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            runtime_env=local_runtime_env(serving, Path(temp_dir or tempfile.mkdtemp(prefix="facegraph-test-ray-"))),
        )


def stop_ray():
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


# One local Ray and Serve for every module that only needs the fixture-shaped cluster and default HTTP
# options (its app is deployed and deleted per module); a module with its own cluster, HTTP options or
# private logs stops it first. Sharing modules run first (``pytest_collection_modifyitems``).
_shared: dict[str, int] = {}


def shares_ray(module) -> bool:
    """A module shares the session's Ray when its tests use ``serve_app`` and it sets no HTTP options or serving mode."""
    if hasattr(module, "HTTP_OPTIONS") or hasattr(module, "SERVING"):
        return False
    tests = [f for name, f in vars(module).items() if name.startswith("test_") and callable(f)]
    return any("serve_app" in inspect.signature(f).parameters for f in tests)


def release_shared() -> None:
    if _shared:
        _shared.clear()
        stop_ray()


def _shared_port(tmp_path_factory) -> int:
    import ray
    from ray import serve

    if not (_shared and ray.is_initialized()):
        release_shared()
        start_ray(temp_dir=str(tmp_path_factory.mktemp("ray-shared")))
        _shared["port"] = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": _shared["port"]}, proxy_location="HeadOnly")
    return _shared["port"]


def pytest_collection_modifyitems(items):
    # Stable: tests without Ray first, then the graph modules that share one, then the rest.
    def rank(item) -> int:
        if "graph" not in item.path.parent.name:
            return 0
        return 1 if shares_ray(item.module) else 2

    items.sort(key=rank)


@pytest.fixture(scope="module", autouse=True)
def _own_ray_unless_shared(request):
    if not shares_ray(request.module):
        release_shared()
    yield


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_ray():
    yield
    release_shared()


@pytest.fixture(scope="module")
def serve_app(request, tmp_path_factory):
    """Deploy ``module.CONFIG`` (or the fixture config; a callable gets ``tmp_path_factory``); yields (base_url, app handle)."""
    from ray import serve

    from facegraph.graph.app import build_app

    config = getattr(request.module, "CONFIG", FIXTURE_CONFIG)
    if callable(config):
        config = config(tmp_path_factory)
    name = config.get("name", "facegraph")
    if shares_ray(request.module):
        port = _shared_port(tmp_path_factory)
        handle = serve.run(build_app(config), name=name, route_prefix="/")
        yield f"http://127.0.0.1:{port}", handle
        serve.delete(name)
        return
    # A private Ray with its own temp dir: its logs are this module's alone (privacy tests read them).
    start_ray(temp_dir=str(tmp_path_factory.mktemp("ray")), serving=getattr(request.module, "SERVING", DEFAULT_MODE))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, **getattr(request.module, "HTTP_OPTIONS", {})}, proxy_location="HeadOnly")
    handle = serve.run(build_app(config), name=name, route_prefix="/")
    yield f"http://127.0.0.1:{port}", handle
    stop_ray()
