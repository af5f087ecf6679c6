"""Ray's autoscaler adds a GPU node for replicas that wait for a GPU, and removes it when they are gone.

A head with no GPU runs Ray's fake multi-node provider (worker nodes are local processes); the
recognizer asks for half a GPU, so it can only start once the autoscaler has added a GPU node.
The scenario runs in a process of its own (``python -m tests.graph.test_fake_autoscaler``): its
Ray client settings (authentication off, an external cluster) must not leak into the other
modules' clusters, which live in the pytest process.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from facegraph.graph.serving import DEFAULT_MODE, local_runtime_env
from tests.graph.conftest import FIXTURE_CONFIG, free_port

GCS_PORT = 6379  # the fake provider's worker nodes join the head at this port
CONFIG = {
    "name": "facegraph",
    "detector": {**FIXTURE_CONFIG["detector"], "deployment": {"num_cpus": 0.5, "num_gpus": 0}},
    "recognizer": {**FIXTURE_CONFIG["recognizer"], "deployment": {"num_cpus": 0.5, "num_gpus": 0.5}},
    "deepfake": None,
    "gallery": None,
}
AUTOSCALER = {
    "cluster_name": "facegraph-fake",
    "max_workers": 1,
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1,
    "provider": {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "gcs_address": f"127.0.0.1:{GCS_PORT}",
    },
    "auth": {"ssh_user": "ray"},
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1},
    },
    "head_node_type": "ray.head.default",
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
}


def _ray(*args, env):
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=env, capture_output=True, text=True, timeout=120)


def _alive_nodes():
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def scenario() -> dict:
    """Deploy an app that needs a GPU on a cluster without one; report what the autoscaler did."""
    import httpx
    import ray
    from ray import serve

    from facegraph.graph.app import build_app
    from tests.fixture_models import draw_squares
    from facegraph.models.imaging import encode_jpeg

    out: dict = {"nodes_before": len(_alive_nodes()), "gpu_before": any(n["Resources"].get("GPU") for n in _alive_nodes())}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    asked = time.monotonic()
    # serve.run returns once every replica runs: only after a GPU node has joined.
    deploying = threading.Thread(target=serve.run, args=(build_app(CONFIG),), kwargs={"name": "facegraph", "route_prefix": "/"}, daemon=True)
    deploying.start()
    deploying.join(timeout=180)
    if deploying.is_alive():
        raise TimeoutError(f"the app did not start within 180 s: {serve.status().applications}")
    out["joined_s"] = round(time.monotonic() - asked, 1)
    gpu_nodes = [n for n in _alive_nodes() if n["Resources"].get("GPU")]
    out["gpu_nodes"] = len(gpu_nodes)
    info = serve.get_deployment_handle("Recognizer", "facegraph").describe.remote().result()
    out["recognizer_on_gpu_node"] = bool(gpu_nodes) and info["node_id"] == gpu_nodes[0]["NodeID"]
    out["recognizer_gpu_fraction"] = info["gpu_fraction"]
    jpeg = encode_jpeg(draw_squares(640, 480, [(200, 150, 320, 270)]), 90)
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/embed", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60)
    out["status"], out["faces"] = answer.status_code, len(answer.json().get("faces", []))
    serve.delete("facegraph")
    removed = time.monotonic()
    _wait(lambda: not any(n["Resources"].get("GPU") for n in _alive_nodes()), 120, "the idle GPU node to be removed")
    out["removed_s"] = round(time.monotonic() - removed, 1)
    serve.shutdown()
    ray.shutdown()
    return out


def main() -> int:
    import ray

    folder = Path(tempfile.mkdtemp(prefix="facegraph-autoscaler-"))
    config = folder / "autoscaler.yaml"
    config.write_text(yaml.safe_dump(AUTOSCALER))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    started = _ray(
        "start", "--head", f"--port={GCS_PORT}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
        f"--autoscaling-config={config}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={folder / 'ray'}",
        env=env,
    )  # fmt: skip
    if started.returncode != 0:
        print(json.dumps({"error": started.stderr[-2000:]}))
        return 1
    try:
        ray.init(address=f"127.0.0.1:{GCS_PORT}", log_to_driver=False, runtime_env=local_runtime_env(DEFAULT_MODE, folder / "serving"))
        print(json.dumps(scenario()))
        return 0
    finally:
        _ray("stop", "--force", env=env)


def test_a_gpu_node_joins_for_a_waiting_replica_and_leaves_after():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run([sys.executable, "-m", "tests.graph.test_fake_autoscaler"], env=env, capture_output=True, text=True, timeout=480)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines, (run.stdout[-3000:], run.stderr[-3000:])
    result = json.loads(lines[-1])
    assert result["nodes_before"] == 1 and not result["gpu_before"]
    assert result["gpu_nodes"] == 1 and result["recognizer_on_gpu_node"] and result["recognizer_gpu_fraction"] == 0.5
    assert result["status"] == 200 and result["faces"] == 1
    print(f"GPU node joined {result['joined_s']} s after the app asked; removed {result['removed_s']} s after it left")


if __name__ == "__main__":
    sys.exit(main())
