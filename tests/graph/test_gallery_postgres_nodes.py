"""Two simulated nodes, each with its own facegraph app and Gallery replica, share one PostgreSQL gallery:
a subject enrolled through one node is identified, listed and erased through the other."""

import copy
import tempfile
from pathlib import Path

import httpx
import pytest

from facegraph.benchmarks.local_postgres import LocalPostgres
from facegraph.graph.serving import DEFAULT_MODE, local_runtime_env
from tests.fixture_models import draw_squares
from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import FIXTURE_CONFIG, free_port

JPEG = encode_jpeg(draw_squares(640, 480, [(250, 150, 370, 270)]), 90)
HEADERS = {"content-type": "image/jpeg"}
NODES = ("node_a", "node_b")


@pytest.fixture(scope="module")
def postgres():
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def nodes(postgres):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from facegraph.graph.app import build_app

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    for node in NODES:  # a custom resource per node pins each app's Gallery replica to its node
        c.add_node(num_cpus=2, num_gpus=1, resources={node: 1}, node_ip_address="127.0.0.1")
    ray.init(address=c.address, log_to_driver=False, runtime_env=local_runtime_env(DEFAULT_MODE, Path(tempfile.mkdtemp(prefix="facegraph-test-ray-"))))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    for node in NODES:
        config = copy.deepcopy(FIXTURE_CONFIG)
        config.update(name=f"facegraph-{node}", deepfake=None)
        for stage in ("detector", "recognizer"):
            config[stage]["deployment"].update(num_cpus=0.1)
        config["gallery"] = {
            "backend": "postgres",
            "dsn": postgres.dsn,
            "deployment": {"num_replicas": 1, "num_cpus": 0.1, "resources": {node: 1}},
        }
        serve.run(build_app(config), name=config["name"], route_prefix=f"/{node}")
    yield {node: f"http://127.0.0.1:{port}/{node}" for node in NODES}
    serve.shutdown()
    ray.shutdown()
    c.shutdown()


def test_a_subject_enrolled_on_one_node_is_identified_on_the_other(nodes):
    from ray import serve

    for node in NODES:
        deployment = serve.status().applications[f"facegraph-{node}"].deployments["Gallery"]
        assert deployment.replica_states.get("RUNNING") == 1
    a, b = nodes["node_a"], nodes["node_b"]
    r = httpx.post(f"{a}/v1/subjects", json={"name": "Square", "metadata": {"on": "a"}}, timeout=60)
    assert r.status_code == 201, r.text
    subject = r.json()["id"]
    r = httpx.post(f"{a}/v1/subjects/{subject}/faces", content=JPEG, headers=HEADERS, timeout=60)
    assert r.status_code == 201, r.text
    # Node b's replica holds nothing of its own: it asks the shared database.
    body = httpx.post(f"{b}/v1/identify", content=JPEG, headers=HEADERS, timeout=60).json()
    (face,) = body["faces"]
    assert face["identity"]["subject_id"] == subject and face["identity"]["name"] == "Square"
    assert face["identity"]["similarity"] > 0.999
    assert httpx.get(f"{b}/v1/subjects/{subject}", timeout=60).json()["faces"] == 1
    assert httpx.get(f"{b}/v1/gallery", timeout=60).json()["faces"] == 1
    # Erased through b: gone for a at once.
    r = httpx.delete(f"{b}/v1/subjects/{subject}", timeout=60)
    assert r.status_code == 200 and r.json()["faces_erased"] == 1
    assert httpx.get(f"{a}/v1/subjects/{subject}", timeout=60).status_code == 404
    (face,) = httpx.post(f"{a}/v1/identify", content=JPEG, headers=HEADERS, timeout=60).json()["faces"]
    assert face["identity"] is None and face["matches"] == []
