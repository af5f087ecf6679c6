"""A simulated two-node GPU cluster: fractional replicas pack onto GPUs, spread across nodes,
autoscale up under load and back down after it without dropping requests; metrics are exported."""

import copy
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from facegraph.graph.serving import DEFAULT_MODE, local_runtime_env
from tests.fixture_models import draw_squares
from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import FIXTURE_CONFIG, free_port

JPEG = encode_jpeg(draw_squares(1280, 720, [(500, 300, 620, 420)]), 90)
STAGES = {"detector": "Detector", "recognizer": "Recognizer", "deepfake": "DeepfakeClassifier"}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    ports = [free_port() for _ in range(3)]
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1", "metrics_export_port": ports[0]},
    )
    for port in ports[1:]:
        c.add_node(num_cpus=2, num_gpus=2, node_ip_address="127.0.0.1", metrics_export_port=port)
    ray.init(address=c.address, log_to_driver=False, runtime_env=local_runtime_env(DEFAULT_MODE, Path(tempfile.mkdtemp(prefix="facegraph-test-ray-"))))
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port}, proxy_location="HeadOnly")
    yield {"base": f"http://127.0.0.1:{http_port}", "metrics_ports": ports, "head": c.head_node.unique_id}
    serve.shutdown()
    ray.shutdown()
    c.shutdown()


def deploy(config):
    from ray import serve

    from facegraph.graph.app import build_app

    serve.run(build_app(config), name="facegraph", route_prefix="/")


def replica_placements(stage: str, expected: int) -> dict[int, tuple[str, str, float]]:
    """pid -> (node, gpu id, fraction) for every replica of a stage, as the replicas report it."""
    from ray import serve

    handle = serve.get_deployment_handle(STAGES[stage], "facegraph")
    seen = {}
    for _ in range(200):
        info = handle.describe.remote().result()
        seen[info["replica_pid"]] = (info["node_id"], tuple(info["gpu_ids"]), info["gpu_fraction"])
        if len(seen) == expected:
            break
    return seen


def running(stage: str) -> int:
    from ray import serve

    dep = serve.status().applications["facegraph"].deployments[STAGES[stage]]
    return dep.replica_states.get("RUNNING", 0)


def test_fractional_replicas_pack_onto_gpus_and_spread_across_nodes(cluster):
    config = copy.deepcopy(FIXTURE_CONFIG)
    for stage, replicas in (("detector", 4), ("recognizer", 4), ("deepfake", 2)):
        config[stage]["deployment"].update(num_replicas=replicas, num_cpus=0.1)
    deploy(config)
    assert (running("detector"), running("recognizer"), running("deepfake")) == (4, 4, 2)
    load = defaultdict(float)
    for stage, replicas in (("detector", 4), ("recognizer", 4), ("deepfake", 2)):
        placements = replica_placements(stage, replicas)
        assert len(placements) == replicas
        nodes = Counter(node for node, _, _ in placements.values())
        assert cluster["head"] not in nodes, "no GPU replica may land on the GPU-less head"
        if replicas >= 2:
            assert len(nodes) == 2, f"{stage} replicas should spread over both GPU nodes: {nodes}"
        for node, gpus, fraction in placements.values():
            assert len(gpus) == 1 and fraction == FIXTURE_CONFIG[stage]["deployment"]["num_gpus"]
            load[(node, gpus[0])] += fraction
    assert all(total <= 1.0 + 1e-9 for total in load.values()), load
    # Four 0.25 replicas of detector and recognizer per node share GPUs: fractions really pack.
    assert max(load.values()) == pytest.approx(1.0)
    r = httpx.post(f"{cluster['base']}/v1/analyze", content=JPEG, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_autoscaling_up_under_load_and_down_after_without_dropping_requests(cluster):
    config = copy.deepcopy(FIXTURE_CONFIG)
    config["detector"]["deployment"] = {
        "num_cpus": 0.1,
        "num_gpus": 0.25,
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 3,
            "target_ongoing_requests": 1,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2,
            "upscale_delay_s": 1,
            "downscale_delay_s": 3,
        },
        "graceful_shutdown_timeout_s": 20,
        "batching": {"max_batch_size": 2, "batch_wait_timeout_s": 0.01},
    }
    for stage in ("recognizer", "deepfake"):
        config[stage]["deployment"].update(num_replicas=1, num_cpus=0.1)
    deploy(config)
    assert running("detector") == 1
    statuses: list[int] = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(f"{cluster['base']}/v1/detect", content=JPEG, headers={"content-type": "image/jpeg"}).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    peak, deadline = 1, time.monotonic() + 60
    while time.monotonic() < deadline and peak < 2:
        peak = max(peak, running("detector"))
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert peak >= 2, "the detector never scaled up under load"
    # A trickle of requests continues while replicas drain and stop.
    down, deadline = None, time.monotonic() + 90
    while time.monotonic() < deadline:
        statuses.append(httpx.post(f"{cluster['base']}/v1/detect", content=JPEG, headers={"content-type": "image/jpeg"}, timeout=60).status_code)
        if running("detector") == 1:
            down = True
            break
        time.sleep(0.5)
    assert down, "the detector never scaled back down"
    assert statuses and set(statuses) == {200}, Counter(statuses)


def test_metrics_are_exported(cluster):
    base = cluster["base"]
    httpx.post(f"{base}/v1/analyze", content=JPEG, headers={"content-type": "image/jpeg"}, timeout=60)
    httpx.post(f"{base}/v1/analyze", content=b"junk", headers={"content-type": "image/jpeg"}, timeout=60)
    wanted = {
        "facegraph_batch_size_bucket",
        "facegraph_model_latency_ms_bucket",
        "facegraph_provider_fallbacks",
        "facegraph_request_latency_ms_bucket",
        "facegraph_stage_latency_ms_bucket",
        "facegraph_faces_per_image_bucket",
        "facegraph_errors",
    }
    found: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not wanted <= found:
        for port in cluster["metrics_ports"]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            for line in text.splitlines():
                name = line.split("{")[0].split(" ")[0].removeprefix("ray_")
                if name.startswith("facegraph_"):
                    found.add(name.removesuffix("_total"))
        time.sleep(2)
    assert wanted <= found, wanted - found
