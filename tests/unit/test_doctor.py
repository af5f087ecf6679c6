import json

from facegraph.graph.cli import main
from facegraph.models.doctor import diagnose
from facegraph.models.runtime import CPU


def test_auto_reports_cpu_and_succeeds_here():
    report = diagnose("auto")
    assert report["ok"] is True
    assert CPU in report["onnxruntime"]["providers_working"]
    if not report["gpus"]:
        assert report["runs_on"] == CPU


def test_cli_exit_codes_and_json(capsys):
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "auto"
    if "CUDAExecutionProvider" not in data["onnxruntime"]["providers_working"]:
        assert main(["doctor", "--device", "cuda"]) == 1
        out = capsys.readouterr().out
        assert "CANNOT be met" in out and "Fix:" in out
        assert "will run on the CPU" not in out
