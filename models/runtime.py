"""The one place that builds ONNX Runtime sessions, and says what they really run on.

onnxruntime-gpu does not raise when the CUDA libraries it was built against are
missing: it writes a line to stderr and quietly runs on the CPU. Every session
here is built with stderr captured, the provider that really runs is read back
from the session, and each provider that fell back gets a record naming the
missing libraries and the fix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from pydantic import BaseModel, ConfigDict

from facegraph.models.cuda_libs import captured_stderr, fix_for, missing_provider_libraries, preload_cuda_libraries
from facegraph.models.errors import ModelLoadError, ProviderUnavailableError
from facegraph.models.gpu import nvml_error, visible_gpu

logger = logging.getLogger(__name__)

DevicePolicy = Literal["auto", "cuda", "tensorrt", "cpu"]
CPU, CUDA, TRT, DML = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "DmlExecutionProvider",
)
_DEVICE_OF = {CPU: "cpu", CUDA: "cuda", TRT: "tensorrt", DML: "directml"}


class RuntimeSettings(BaseModel):
    """The runtime knobs a model spec sets (``graph/config.py``'s ``model:`` block declares them only here).

    Attributes:
        device: ``auto`` (CUDA when a GPU is visible, DirectML on Windows, else
            CPU), or an explicit ``cuda``/``tensorrt``/``cpu`` that must be met.
        gpu_mem_limit_mb: explicit CUDA arena limit, overrides the fraction.
        cudnn_conv_algo_search: ``EXHAUSTIVE``, ``HEURISTIC`` or ``DEFAULT``.
        trt_fp16: let TensorRT build fp16 engines.
        trt_cache_dir: TensorRT engine and timing cache directory.
        cpu_mem_arena: keep ONNX Runtime's CPU memory arena. Faster, but with inputs of many
            shapes (MTCNN's pyramid over pictures of every size) it holds the peak of each.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DevicePolicy = "auto"
    gpu_mem_limit_mb: int | None = None
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    trt_fp16: bool = True
    trt_cache_dir: str | None = None
    cpu_mem_arena: bool = True


class RuntimeOptions(RuntimeSettings):
    """How to run a model: its settings plus what the replica was given.

    Attributes:
        gpu_fraction: the replica's declared share of one GPU; with the GPU's
            total memory it sets ``gpu_mem_limit`` unless that is given.
        cpu_threads: intra-op threads, normally the replica's CPU share.
    """

    gpu_fraction: float = 0.0
    cpu_threads: int = 1


@dataclass(frozen=True)
class ProviderFallback:
    """Why a requested provider is not the one running."""

    provider: str
    reason: str
    missing_libraries: tuple[str, ...] = ()
    fix: str = ""


@dataclass(frozen=True)
class ProviderReport:
    """What a session asked for and what it really runs on."""

    requested: tuple[str, ...]
    active: str
    device: str
    fallbacks: tuple[ProviderFallback, ...] = ()
    gpu_mem_limit_mb: int | None = None
    intra_op_threads: int = 1
    log: tuple[str, ...] = field(default=(), repr=False)


_MISSING_RE = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")
_REQUIRE_RE = re.compile(r"Require cuDNN [\d.*]+ and CUDA [\d.*]+")


def _fallback_from_log(provider: str, log: list[str]) -> ProviderFallback:
    missing = sorted(set(_MISSING_RE.findall("\n".join(log))) | set(missing_provider_libraries(provider)))
    requirement = _REQUIRE_RE.search("\n".join(log))
    if missing:
        reason = f"{provider} could not load: missing {', '.join(missing)}"
    elif requirement:
        reason = f"{provider} could not be created: {requirement.group(0)}"
    else:
        errors = [line for line in log if provider in line or "error" in line.lower()]
        reason = f"{provider} was not used" + (f": {errors[-1].strip()[-300:]}" if errors else "")
    if requirement and missing:
        reason += f" ({requirement.group(0)})"
    return ProviderFallback(provider, reason, tuple(missing), fix_for(missing))


def _gpu_mem_limit_mb(options: RuntimeOptions) -> int | None:
    if options.gpu_mem_limit_mb:
        return int(options.gpu_mem_limit_mb)
    if options.gpu_fraction <= 0:
        return None
    gpu = visible_gpu()
    if gpu is None:
        return None
    return int(min(options.gpu_fraction, 1.0) * gpu.memory_total_mb)


def plan_providers(options: RuntimeOptions) -> tuple[list, list[ProviderFallback], int | None]:
    """Providers (with options) to request for a policy, plus fallbacks known up front."""
    available = ort.get_available_providers()
    skipped: list[ProviderFallback] = []
    mem_limit = _gpu_mem_limit_mb(options)
    cuda_opts: dict[str, object] = {
        "device_id": 0,  # Ray sets CUDA_VISIBLE_DEVICES per replica
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
    }
    if mem_limit:
        cuda_opts["gpu_mem_limit"] = mem_limit * 2**20
    trt_opts: dict[str, object] = {"device_id": 0, "trt_fp16_enable": options.trt_fp16}
    if options.trt_cache_dir:
        Path(options.trt_cache_dir).mkdir(parents=True, exist_ok=True)
        trt_opts.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=options.trt_cache_dir,
            trt_timing_cache_enable=True,
            trt_timing_cache_path=options.trt_cache_dir,
        )
    if mem_limit:
        trt_opts["trt_max_workspace_size"] = mem_limit * 2**20

    wanted: list[str]
    if options.device == "cpu":
        wanted = []
    elif options.device == "cuda":
        wanted = [CUDA]
    elif options.device == "tensorrt":
        wanted = [TRT, CUDA]
    else:
        wanted = [DML] if sys.platform == "win32" else []
        if CUDA in available and visible_gpu() is None:
            reason = nvml_error() or "CUDA_VISIBLE_DEVICES hides every GPU"
            skipped.append(ProviderFallback(CUDA, f"no NVIDIA GPU visible ({reason})", (), fix_for([])))
        else:
            wanted.insert(0, CUDA)
    providers: list = []
    for name in wanted:
        if name not in available:
            skipped.append(
                ProviderFallback(name, f"{name} is not in this onnxruntime build ({ort.__version__})", (), fix_for([]))
            )
            continue
        providers.append((name, {CUDA: cuda_opts, TRT: trt_opts}.get(name, {})))
    providers.append((CPU, {}))
    return providers, skipped, mem_limit


def session_options(cpu_threads: int, cpu_mem_arena: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = cpu_mem_arena
    opts.intra_op_num_threads = max(1, int(cpu_threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Replicas share cores with the Ray proxy and each other: idle threads must sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def create_session(model: str | Path | bytes, options: RuntimeOptions) -> tuple[ort.InferenceSession, ProviderReport]:
    """Build an InferenceSession and report the provider that really runs.

    Args:
        model: an ONNX file path or the serialized model.
        options: device policy, GPU share and threads.

    Raises:
        ModelLoadError: the file is missing or not a loadable ONNX model.
        ProviderUnavailableError: an explicit ``cuda``/``tensorrt`` policy cannot be met.
    """
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelLoadError(f"model file not found: {model}")
    providers, fallbacks, mem_limit = plan_providers(options)
    if any(name in (CUDA, TRT) for name, _ in providers):
        preload_cuda_libraries()
    log: list[str] = []
    source = model if isinstance(model, bytes) else str(model)
    try:
        # Native code logs to fd 2; the Python layer prints its "EP Error" retry to stdout.
        printed = io.StringIO()
        with captured_stderr(log), contextlib.redirect_stdout(printed):
            session = ort.InferenceSession(source, sess_options=session_options(options.cpu_threads, options.cpu_mem_arena), providers=providers)
        log.extend(printed.getvalue().splitlines())
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime could not load {'model bytes' if isinstance(model, bytes) else model}: {exc}") from exc
    active = session.get_providers()
    for name, _ in providers:
        if name != CPU and name not in active:
            fallbacks.append(_fallback_from_log(name, log))
    for line in log:
        logger.debug("onnxruntime: %s", line)
    report = ProviderReport(
        requested=tuple(name for name, _ in providers),
        active=active[0],
        device=_DEVICE_OF.get(active[0], active[0]),
        fallbacks=tuple(fallbacks),
        gpu_mem_limit_mb=mem_limit if active[0] in (CUDA, TRT) else None,
        intra_op_threads=max(1, int(options.cpu_threads)),
        log=tuple(log),
    )
    wanted = {"cuda": CUDA, "tensorrt": TRT}.get(options.device)
    if wanted and report.active != wanted:
        why = next((f for f in report.fallbacks if f.provider == wanted), None)
        raise ProviderUnavailableError(
            f"device policy '{options.device}' cannot be met: the session runs on {report.active}"
            + (f"; {why.reason}. Fix: {why.fix}" if why else "")
        )
    for fallback in report.fallbacks:
        # auto on a machine without a GPU is expected: say so quietly.
        quiet = options.device == "auto" and fallback.reason.startswith("no NVIDIA GPU visible")
        logger.log(logging.INFO if quiet else logging.WARNING, "%s; running on %s. Fix: %s", fallback.reason, report.active, fallback.fix)
    return session, report
