"""``python -m facegraph.benchmarks.gpu --dry-run``: the GPU benchmark's every step on the CPU, so it cannot rot before a GPU run."""

from __future__ import annotations

import json

import pytest

from facegraph.benchmarks.gpu.run import run
from facegraph.benchmarks.gpu.sweep import TARGETS


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    return run(out, dry_run=True, budget_s=120), out


def test_every_step_runs_and_writes_its_files(dry_run):
    results, out = dry_run
    assert json.loads((out / "results.json").read_text())["dry_run"] is True
    report = (out / "report.md").read_text()
    assert "dry run on the CPU" in report and "## Batch sweeps" in report and "### Replicas" in report
    assert (out / "graph" / "results.json").is_file() and (out / "graph" / "report.md").is_file()
    assert set(results["doctor"]) == {"cuda", "tensorrt"}


def test_sweeps_time_the_cpu_and_say_why_a_gpu_provider_did_not_run(dry_run):
    results, _ = dry_run
    rows = results["sweeps"]
    models = {(r["model"], r["part"]) for r in rows}
    assert {("blazeface", "model"), ("centerface", "model"), ("mtcnn", "pnet"), ("dlib-resnet", "model"), ("arcface-r50-shaped", "model"), ("vit-b16-shaped", "model")} <= models
    assert {r["target"] for r in rows} == {t.name for t in TARGETS}
    for row in rows:
        if row["target"] == "cpu fp32":
            assert row["ran"] and [p["batch_size"] for p in row["points"]] == [1, 2, 4], row
            assert all(p["items_per_s"] > 0 and p["ms_per_call"] > 0 for p in row["points"])
        elif not row["ran"]:  # no GPU here: the reason names what is missing, never a silent CPU run
            assert "CPUExecutionProvider" in row["reason"] or "budget" in row["reason"], row


def test_the_served_graph_reports_every_replica_and_its_share(dry_run):
    results, _ = dry_run
    graph = results["graph"]
    assert graph["config"] == "cluster/gpu.yaml"
    assert [r["concurrency"] for r in graph["levels"]["http"]] == [1, 4]
    assert all(r["throughput_rps"] > 0 for r in graph["levels"]["http"])
    replicas = graph["probe"]["replicas"]
    assert sorted(r["stage"] for r in replicas) == ["detector", "detector", "recognizer", "recognizer"]
    assert all(r["gpu_fraction"] == 0.25 and r["provider"] == "CPUExecutionProvider" for r in replicas)
    assert graph["probe"]["nvidia_smi"]["ok"] is False  # no GPU here: said, not guessed


def test_the_graph_is_measured_in_the_default_serving_mode_and_in_rays_plain_one(dry_run):
    serving = dry_run[0]["graph"]["serving"]
    assert serving["modes"] == ["fast", "plain"]
    assert set(serving["throughput_vs_plain"]) == {"fast"}  # at 16 clients, which the GPU plan has and the dry run's does not
    assert all(serving["ratios"][mode]["overhead_p50_ms_c1"]["median"] is not None for mode in ("fast", "plain"))
