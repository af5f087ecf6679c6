"""Every Serve config under cluster/ validates against our schema and Serve's own."""

import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from facegraph.graph.config import DeploymentConfig, FacegraphConfig, load_serve_config
from tests.fixture_models import fixture_path

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
SERVE_CONFIGS = sorted(p for p in CLUSTER.glob("*.yaml") if "applications" in (yaml.safe_load(p.read_text()) or {}))
# The benchmark's named baselines (``facegraph bench --baseline``) are Serve configs too.
BASELINES = sorted((CLUSTER.parent / "benchmarks").glob("*.yaml"))
OTHER_FILES = {"ray-cluster.yaml", "kuberay-rayservice.yaml", "grafana-dashboard.json"}


def test_there_are_serve_configs():
    assert {"local.yaml", "gpu.yaml"} <= {p.name for p in SERVE_CONFIGS}


@pytest.mark.parametrize("path", SERVE_CONFIGS + BASELINES, ids=lambda p: p.name)
def test_serve_config_validates(path):
    data = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(data)
    config, http = load_serve_config(path)
    assert http.get("host") == "127.0.0.1" or path.name not in ("local.yaml",)
    for stage in ("detector", "recognizer", "deepfake"):
        stage_config = getattr(config, stage)
        if stage_config is not None:
            options = stage_config.deployment.serve_options()
            assert options["max_ongoing_requests"] >= stage_config.deployment.batching.max_batch_size


def test_batch_that_can_never_fill_is_refused():
    with pytest.raises(ValidationError, match="batches could never fill"):
        DeploymentConfig(max_ongoing_requests=4, batching={"max_batch_size": 8})


def test_unknown_keys_and_wrong_roles_are_refused():
    with pytest.raises(ValidationError, match="extra"):
        FacegraphConfig.model_validate({"detectr": {}})
    with pytest.raises(ValidationError, match="unknown detector family 'arcface'"):
        FacegraphConfig.model_validate({"detector": {"model": {"family": "arcface", "path": fixture_path("pooled-arcface")}}})


def test_a_recognizer_that_cannot_align_on_the_detectors_points_is_refused(monkeypatch):
    from facegraph.models.blazeface import BlazeFace

    both = {"detector": {"model": {"family": "blazeface", "pack": "blazeface"}}, "recognizer": {"model": {"family": "arcface", "path": fixture_path("pooled-arcface")}}}
    FacegraphConfig.model_validate(both)  # eyes, nose and mouth centre: ArcFace's template has them
    monkeypatch.setattr(BlazeFace, "landmarks", ("nose", "mouth_center"))
    with pytest.raises(ValidationError, match="recognizer 'arcface' .* and detector 'blazeface' .* do not fit: .*both eyes"):
        FacegraphConfig.model_validate(both)
    # Box crops (a deepfake classifier) need no landmarks.
    FacegraphConfig.model_validate({**both, "recognizer": None, "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier")}}})


def test_autoscaling_replaces_a_fixed_replica_count():
    options = DeploymentConfig(autoscaling_config={"min_replicas": 1, "max_replicas": 4}).serve_options()
    assert "num_replicas" not in options and options["autoscaling_config"]["max_replicas"] == 4


def test_api_keys_from_config_and_environment(monkeypatch):
    monkeypatch.setenv("FACEGRAPH_API_KEYS", "k2, k3")
    config = FacegraphConfig.model_validate({"ingress": {"api_keys": ["k1"]}})
    assert config.api_keys() == ["k1", "k2", "k3"]


def test_kuberay_service_carries_the_production_application():
    manifest = yaml.safe_load((CLUSTER / "kuberay-rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    production = yaml.safe_load((CLUSTER / "production.yaml").read_text())
    assert serve_config["applications"] == production["applications"]
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert any(w["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for w in workers)


def test_production_config_autoscales_every_deployment():
    config, _ = load_serve_config(CLUSTER / "production.yaml")
    for stage in (config.detector, config.recognizer, config.ingress):
        assert stage is not None and stage.deployment.autoscaling_config is not None
        assert stage.deployment.max_queued_requests > 0


def test_ray_cluster_launcher_file_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())


def test_cluster_files_start_ray_in_the_default_serving_mode():
    import shlex

    from facegraph.graph.serving import DEFAULT_MODE, env

    wanted = env(DEFAULT_MODE)
    assert wanted["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and wanted["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in launcher[key] if "ray start" in c]
        words = shlex.split(start)
        assert words[0] == "env" and words.index("ray") > 1, start
        assigned = dict(word.split("=", 1) for word in words[1 : words.index("ray")])
        assert assigned == wanted, key
    manifest = yaml.safe_load((CLUSTER / "kuberay-rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [group["template"] for group in cluster["workerGroupSpecs"]]
    for template in templates:
        for container in template["spec"]["containers"]:
            variables = {item["name"]: item["value"] for item in container["env"]}
            assert {k: variables.get(k) for k in wanted} == wanted, container["name"]
            assert variables["RAY_USAGE_STATS_ENABLED"] == "0"


def test_local_serving_keeps_haproxy_on_loopback_and_its_ports_its_own(tmp_path):
    from facegraph.graph.serving import loopback_haproxy, local_runtime_env

    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "frontend prometheus\n    bind :9101\nfrontend http_frontend\n    bind 127.0.0.1:8000\n"
        "listen stats\n  bind *:8404\n  stats enable\n"
    )
    fake = tmp_path / "haproxy"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    wrapper = loopback_haproxy(tmp_path / "wrapper", binary=str(fake))
    run = subprocess.run([str(wrapper), "-db", "-f", str(config), "-sf", "12"], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["-db", "-f", str(config), "-sf", "12"]
    binds = [line.split()[1] for line in config.read_text().splitlines() if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404"]
    first, second = (local_runtime_env("fast", tmp_path / name)["env_vars"] for name in ("one", "two"))
    ports = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
    assert {first[k] for k in ports}.isdisjoint({second[k] for k in ports})
    assert Path(first["RAY_SERVE_HAPROXY_BINARY_PATH"]).parent == tmp_path / "one"
    assert local_runtime_env("plain", tmp_path) == {}


def test_grafana_dashboard_queries_exported_metrics():
    import json

    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("facegraph_request_latency_ms", "facegraph_stage_latency_ms", "facegraph_batch_size", "facegraph_faces_per_image", "facegraph_errors", "facegraph_provider_fallbacks", "facegraph_model_latency_ms"):
        assert f"ray_{metric}" in exprs


def test_every_file_under_cluster_is_checked():
    names = {p.name for p in CLUSTER.iterdir() if p.is_file()}
    assert names == {p.name for p in SERVE_CONFIGS} | OTHER_FILES
