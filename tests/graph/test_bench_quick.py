"""``facegraph bench --quick`` on the fixture models: the shape and sanity of what it writes, never timings."""

import argparse
import json
import math

import pytest
import yaml

from facegraph.benchmarks import machine
from facegraph.benchmarks.run import main
from tests.graph.conftest import FIXTURE_CONFIG

RATIOS = ("graph_vs_inprocess_throughput", "graph_vs_service_chain_throughput", "overhead_p50_ms_c1", "batching_gain")
PLOTS = (
    "throughput_vs_concurrency.png",
    "latency_percentiles.png",
    "batch_size_curves.png",
    "model_latency.png",
    "observed_batch_sizes.png",
    "stage_times.png",
)


def numbers(value, path="results"):
    """Every number in a JSON tree, with where it sits."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    config = root / "fixture.yaml"
    config.write_text(
        yaml.safe_dump({"applications": [{"name": "facegraph", "route_prefix": "/", "import_path": "facegraph.graph.app:build_app", "args": FIXTURE_CONFIG}]})
    )
    out = root / "out"
    rc = main(argparse.Namespace(quick=True, out=str(out), config=str(config), profile=False))
    return rc, out


def test_quick_bench_writes_results_report_and_plots(quick_run):
    rc, out = quick_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    for key in ("machine", "caption", "config", "pictures", "models", "inprocess", "service_chain", "graph", "ratios", "targets"):
        assert key in results, key
    for key in ("cpu", "cpu_count", "gpus", "ray", "onnxruntime", "numpy", "python", "date"):
        assert key in results["machine"], key
    for path in PLOTS:
        assert path in results["files"]["plots"]
        data = (out / path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path
    report = (out / "report.md").read_text()
    assert "unshare -n" in report and "graph_vs_inprocess_throughput" in report
    for where, value in numbers(results):
        assert math.isfinite(value), where


def test_quick_bench_figures_are_sane(quick_run):
    _, out = quick_run
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"detector", "recognizer", "deepfake"}
    for name, model in results["models"].items():
        b1 = model["batch1"]
        assert b1["count"] > 0 and 0 < b1["min_ms"] <= b1["p50_ms"] <= b1["max_ms"], name
        assert [s["batch_size"] for s in model["batch_sweep"]][:3] == [1, 2, 4]
        assert all(s["items_per_s"] > 0 for s in model["batch_sweep"])
    assert results["inprocess"]["saturation_rps"] > 0 and results["inprocess"]["p50_ms_c1"] > 0
    for runs in (results["graph"]["http"], results["graph"]["handle"], results["service_chain"]["http"]):
        assert [r["concurrency"] for r in runs][:2] == [1, 4]
        for run in runs:
            assert run["requests"] > 0 and run["throughput_rps"] > 0 and not run["errors"]
            assert run["latency"]["p50_ms"] > 0 and run["latency"]["p99_ms"] >= run["latency"]["p50_ms"]
            assert {"decode", "detect", "total"} <= set(run["stage_ms"])
    for run in results["graph"]["http"]:
        assert run["batches"]["detector"]["batches"] > 0
        assert all(int(size) >= 1 and n > 0 for size, n in run["batches"]["detector"]["batch_size_counts"].items())
    ratios = results["ratios"]
    for key in RATIOS:
        assert key in ratios, key
    for key in ("graph_vs_inprocess_throughput", "graph_vs_service_chain_throughput"):
        assert ratios[key] > 0, key
    assert isinstance(ratios["overhead_p50_ms_c1"], float)
    assert set(ratios["batching_gain"]) == {"detector", "recognizer", "deepfake"}
    assert all(gain >= 1.0 for gain in ratios["batching_gain"].values())
    verification = results["pictures"]["verification"]
    assert verification["pictures"] == len(results["pictures"]["items"]) and 0 <= verification["match_rate"] <= 1


def test_bench_refuses_to_start_with_an_outside_interface_up(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(machine, "interfaces_up", lambda: {"lo": True, "eth0": False})
    rc = main(argparse.Namespace(quick=True, out=str(tmp_path / "out"), config=None, profile=False))
    assert rc == 2
    assert "unshare -n" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
