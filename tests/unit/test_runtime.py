import numpy as np
import pytest

import facegraph.models.runtime as runtime
from facegraph.models.errors import ModelLoadError, ProviderUnavailableError
from facegraph.models.doctor import identity_model
from facegraph.models.gpu import GpuInfo
from facegraph.models.runtime import CPU, CUDA, RuntimeOptions, create_session
from tests.fixture_models import fixture_path


def test_cpu_policy_reports_cpu_and_no_fallback():
    session, report = create_session(identity_model(), RuntimeOptions(device="cpu", cpu_threads=2))
    assert report.active == CPU and report.device == "cpu"
    assert report.requested == (CPU,)
    assert report.fallbacks == ()
    assert report.intra_op_threads == 2
    (y,) = session.run(None, {"x": np.zeros((3, 4), np.float32)})
    assert np.allclose(y, 1)


def test_auto_on_a_machine_without_gpu_runs_on_cpu_and_says_why(monkeypatch):
    monkeypatch.setattr(runtime, "visible_gpu", lambda: None)
    _, report = create_session(identity_model(), RuntimeOptions(device="auto"))
    assert report.active == CPU
    if CUDA in runtime.ort.get_available_providers():
        (fallback,) = [f for f in report.fallbacks if f.provider == CUDA]
        assert "no NVIDIA GPU visible" in fallback.reason
        assert "onnxruntime-gpu" in fallback.fix


@pytest.mark.skipif(CUDA not in runtime.ort.get_available_providers(), reason="CPU-only onnxruntime build")
def test_explicit_cuda_that_cannot_be_met_raises_with_the_fix(monkeypatch):
    monkeypatch.setattr(runtime, "missing_provider_libraries", lambda provider: ["libcublasLt.so.13"])
    try:
        _, report = create_session(identity_model(), RuntimeOptions(device="cuda"))
    except ProviderUnavailableError as exc:
        assert "cannot be met" in exc.message
        assert "libcublasLt.so.13" in exc.message
        assert "onnxruntime-gpu[cuda,cudnn]" in exc.message
    else:  # a machine with a working GPU
        assert report.active == CUDA


def test_fallback_record_names_missing_library_from_the_log(monkeypatch):
    monkeypatch.setattr(runtime, "missing_provider_libraries", lambda provider: [])
    log = [
        "[E:onnxruntime:Default, provider_bridge_ort.cc:2251 TryGetProviderInfo_CUDA] Failed to load library "
        "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory",
        "[W:onnxruntime:Default, onnxruntime_pybind_state.cc:1013 CreateExecutionProviderFactoryInstance] "
        "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*.",
    ]
    fallback = runtime._fallback_from_log(CUDA, log)
    assert fallback.missing_libraries == ("libcublasLt.so.13",)
    assert "libcublasLt.so.13" in fallback.reason and "Require cuDNN 9.* and CUDA 13.*" in fallback.reason
    assert "pip install 'onnxruntime-gpu[cuda,cudnn]==" in fallback.fix


def test_gpu_memory_limit_follows_the_declared_fraction(monkeypatch):
    gpu = GpuInfo(0, "Fake GPU", "GPU-1", 0.0, 80_000.0, 0.0, "999")
    monkeypatch.setattr(runtime, "visible_gpu", lambda: gpu)
    providers, _, limit = runtime.plan_providers(RuntimeOptions(device="cuda", gpu_fraction=0.25))
    assert limit == 20_000
    cuda_options = dict(providers)[CUDA]
    assert cuda_options["gpu_mem_limit"] == 20_000 * 2**20
    assert cuda_options["device_id"] == 0
    assert cuda_options["arena_extend_strategy"] == "kSameAsRequested"
    _, _, explicit = runtime.plan_providers(RuntimeOptions(device="cuda", gpu_fraction=0.25, gpu_mem_limit_mb=1234))
    assert explicit == 1234


def test_tensorrt_options_carry_fp16_and_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "visible_gpu", lambda: None)
    providers, _, _ = runtime.plan_providers(RuntimeOptions(device="tensorrt", trt_cache_dir=str(tmp_path / "trt")))
    names = [name for name, _ in providers]
    if runtime.TRT in runtime.ort.get_available_providers():
        assert names[:2] == [runtime.TRT, CUDA]
        trt = dict(providers)[runtime.TRT]
        assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert names[-1] == CPU


def test_missing_or_broken_model_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        create_session(tmp_path / "absent.onnx", RuntimeOptions(device="cpu"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not load"):
        create_session(bad, RuntimeOptions(device="cpu"))


@pytest.mark.parametrize("arena", [True, False])
def test_cpu_memory_arena_follows_the_option(arena):
    session, _ = create_session(identity_model(), RuntimeOptions(device="cpu", cpu_mem_arena=arena))
    assert session.get_session_options().enable_cpu_mem_arena is arena


def test_explicit_intra_op_threads_override_the_cpu_share():
    from facegraph.models.registry import ModelSpec, load_model

    spec = ModelSpec(family="arcface", path=fixture_path("pooled-arcface"), device="cpu", intra_op_threads=2)
    assert load_model(spec, cpu_threads=1).describe()["intra_op_threads"] == 2
    assert load_model(spec.model_copy(update={"intra_op_threads": None}), cpu_threads=1).describe()["intra_op_threads"] == 1
