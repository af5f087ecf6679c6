"""The soak script in a short mode: it runs, answers, and reports every replica's memory."""

from facegraph.benchmarks.soak import soak
from facegraph.graph.config import FacegraphConfig
from tests.graph.conftest import FIXTURE_CONFIG


def test_short_soak_reports_memory_of_every_replica():
    report = soak(FacegraphConfig.model_validate(FIXTURE_CONFIG), seconds=8, concurrency=4, progress=False, sample_s=2)
    run = report["run"]
    assert run["requests"] > 0 and run["errors"] == {}
    names = " ".join(report["memory_start_mb"])
    for deployment in ("Detector", "Recognizer", "DeepfakeClassifier", "Ingress", "ProxyActor"):
        assert deployment in names
    assert all(mb > 10 for mb in report["memory_end_mb"].values())
    assert report["processes_replaced"] == []
    assert set(report["memory_growth_mb"]) == set(report["memory_start_mb"])
    assert len(report["memory_samples"]) >= 3 and set(report["memory_growth_second_half_mb"]) == set(report["memory_start_mb"])
