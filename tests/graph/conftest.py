"""Graph tests: a real local Ray Serve per module (fake GPUs), real HTTP and real handles."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Galleries of the test apps live in a throwaway folder, never in the user's data folder.
os.environ.setdefault("FACEGRAPH_DATA", tempfile.mkdtemp(prefix="facegraph-test-data-"))

FIXTURE_CONFIG = {
    "name": "facegraph",
    "detector": {
        "model": {"family": "yolov8-face", "fixture": "square-yolov8-face", "settings": {"score_threshold": 0.3}},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.25, "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05}},
    },
    "recognizer": {
        "model": {"family": "arcface", "fixture": "pooled-arcface"},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.25, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}},
    },
    "deepfake": {
        "model": {"family": "image-classifier", "fixture": "rgb-classifier"},
        "deployment": {"num_cpus": 0.5, "num_gpus": 0.5, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05}},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int = 4, num_gpus: int = 1, temp_dir: str | None = None):
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
        )


def stop_ray():
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def serve_app(request, tmp_path_factory):
    """Deploy ``module.CONFIG`` (or the fixture config); yields (base_url, app handle)."""
    from ray import serve

    from graph.app import build_app

    config = getattr(request.module, "CONFIG", FIXTURE_CONFIG)
    # A private temp dir per module: its logs are this module's alone (privacy tests read them).
    start_ray(temp_dir=str(tmp_path_factory.mktemp("ray")))
    port = free_port()
    http_options = {"host": "127.0.0.1", "port": port, **getattr(request.module, "HTTP_OPTIONS", {})}
    serve.start(http_options=http_options, proxy_location="HeadOnly")
    handle = serve.run(build_app(config), name=config.get("name", "facegraph"), route_prefix="/")
    yield f"http://127.0.0.1:{port}", handle
    stop_ray()
