"""``facegraph batch`` submitted with ``ray job submit``'s API to a two-node cluster, as the README runs it on a real one.

The cluster is two raylets on this machine's loopback (``ray.cluster_utils.Cluster``) with a
head that only runs the dashboard and the job's driver. The job takes a Serve config YAML, its
detector pool spreads over both nodes, and DEST holds what a local run writes.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import yaml

from facegraph.models.imaging import encode_jpeg
from tests.graph.conftest import free_port

ARGS = {
    "name": "facegraph",
    # One detector per node: 0.75 of a node's single CPU each, so both nodes must take one.
    "detector": {"model": {"family": "blazeface", "pack": "blazeface"}, "deployment": {"num_replicas": 2, "num_cpus": 0.75, "batching": {"max_batch_size": 2}}},
    "recognizer": {"model": {"family": "dlib-resnet", "pack": "dlib-resnet"}, "deployment": {"num_cpus": 0.2}},
    "batch": {"read_batch_size": 2},
}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    dashboard = free_port()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dashboard, "node_ip_address": "127.0.0.1", "metrics_export_port": free_port()},
    )
    for _ in range(2):
        c.add_node(num_cpus=1, node_ip_address="127.0.0.1", metrics_export_port=free_port())
    ray.init(address=c.address, log_to_driver=False)
    yield f"http://127.0.0.1:{dashboard}"
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("cluster-archive")
    astronaut = data.astronaut()
    for k in range(6):
        (root / f"a{k}.jpg").write_bytes(encode_jpeg(np.roll(astronaut, 8 * k, axis=1), 90))
    (root / "notes.jpg").write_bytes(b"not a picture")
    return root


def _wait(client, job_id: str, timeout_s: float = 300):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    raise AssertionError(f"the job did not finish in {timeout_s} s:\n{client.get_job_logs(job_id)[-3000:]}")


def test_a_submitted_job_spreads_its_pools_over_the_nodes(cluster, archive, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [{"name": "facegraph", "import_path": "facegraph.graph.app:build_app", "args": ARGS}]}))
    dest = tmp_path / "faces"
    facegraph = Path(sys.executable).with_name("facegraph")
    client = JobSubmissionClient(cluster)
    repo = Path(__file__).resolve().parents[2]
    job = client.submit_job(
        entrypoint=f"{facegraph} batch {archive} --out {dest} --config {config} --address auto",
        runtime_env={"working_dir": str(repo)},  # the README's --working-dir .
    )
    status = _wait(client, job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "pictures: 7 processed, 0 skipped" in logs and "1 pictures with an error" in logs
    rows = pads.dataset(str(dest), format="parquet").to_table().to_pylist()
    faces = [r for r in rows if r["status"] == "face"]
    assert sorted({Path(r["path"]).name for r in faces}) == [f"a{k}.jpg" for k in range(6)]
    assert all(len(r["embedding"]) == 128 for r in faces)
    assert [r["error_code"] for r in rows if r["status"] == "error"] == ["invalid_image"]
    detectors = list_actors(filters=[("class_name", "=", "MapWorker(MapBatches(DetectStage))")], detail=True, address=cluster)
    assert len({a.node_id for a in detectors}) == 2, [(a.node_id, a.state) for a in detectors]
