"""``facegraph doctor``: what ONNX Runtime can really run on here, proved by running a model."""

from __future__ import annotations

import platform

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from facegraph.models.errors import ProviderUnavailableError
from facegraph.models.onnx_graph import GraphBuilder
from facegraph.models.gpu import list_gpus, nvml_error
from facegraph.models.cuda_libs import cuda_build_version, fix_for, missing_provider_libraries, preload_cuda_libraries
from facegraph.models.runtime import CPU, CUDA, TRT, RuntimeOptions, create_session

_POLICY_PROVIDER = {"cpu": CPU, "cuda": CUDA, "tensorrt": TRT}


def identity_model() -> bytes:
    """The smallest useful model: y = x + 1 on (N, 4) float32, to prove a provider runs."""
    g = GraphBuilder()
    out = g.op("Add", "x", g.const(np.ones(4, np.float32)))
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        {out: "y"},
    )


def probe_provider(provider: str) -> dict:
    """Run the identity model on one provider; ``works`` only if it ran there and answered right."""
    device = {CPU: "cpu", CUDA: "cuda", TRT: "tensorrt"}.get(provider)
    if device is None:
        return {"provider": provider, "works": False, "reason": "not probed on this platform"}
    try:
        session, report = create_session(identity_model(), RuntimeOptions(device=device))
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        (y,) = session.run(None, {"x": x})
        ok = bool(np.allclose(y, x + 1)) and report.active == provider
        return {"provider": provider, "works": ok, "reason": "" if ok else f"ran on {report.active}"}
    except ProviderUnavailableError as exc:
        return {"provider": provider, "works": False, "reason": exc.message}
    except Exception as exc:  # a provider may fail in ways we cannot foresee; report it
        return {"provider": provider, "works": False, "reason": f"{type(exc).__name__}: {exc}"}


def diagnose(policy: str = "auto") -> dict:
    """Everything doctor reports, as a dict; ``ok`` says whether ``policy`` can be met."""
    listed = ort.get_available_providers()
    cuda_built = cuda_build_version()
    preload = preload_cuda_libraries() if CUDA in listed else []
    probes = [probe_provider(p) for p in listed]
    working = [p["provider"] for p in probes if p["works"]]
    missing = missing_provider_libraries(CUDA) if CUDA in listed else []
    gpus = [g.to_json() for g in list_gpus()]
    fixes = []
    if CUDA in listed and CUDA not in working:
        fixes.append(fix_for(missing))
    if CUDA not in listed and gpus:
        fixes.append(f"this onnxruntime build has no CUDA provider: pip install onnxruntime-gpu (installed: {ort.__version__})")
    if policy == "auto":
        runs_on = next((p for p in (CUDA, CPU) if p in working), CPU)
        ok = True
    else:
        wanted = _POLICY_PROVIDER[policy]
        runs_on = wanted if wanted in working else None
        ok = runs_on is not None
    return {
        "ok": ok,
        "policy": policy,
        "runs_on": runs_on,
        "onnxruntime": {
            "version": ort.__version__,
            "device": ort.get_device(),
            "cuda_build": cuda_built,
            "providers_listed": listed,
            "providers_working": working,
            "probes": probes,
        },
        "cuda_libraries": {"missing": missing, "preload_dlls": preload},
        "gpus": gpus,
        "nvml_error": nvml_error(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fixes": fixes,
    }


def render(report: dict) -> str:
    """Human-readable doctor output."""
    o = report["onnxruntime"]
    lines = [
        f"ONNX Runtime {o['version']} ({o['device']} build" + (f", CUDA {o['cuda_build']})" if o["cuda_build"] else ")"),
        f"Providers listed:  {', '.join(o['providers_listed'])}",
        f"Providers working: {', '.join(o['providers_working']) or 'none'}",
    ]
    for probe in o["probes"]:
        mark = "ok " if probe["works"] else "no "
        lines.append(f"  [{mark}] {probe['provider']}" + (f": {probe['reason']}" if probe["reason"] else ""))
    missing = report["cuda_libraries"]["missing"]
    if o["cuda_build"]:
        lines.append(f"CUDA libraries missing: {', '.join(missing) if missing else 'none'}")
    if report["gpus"]:
        for g in report["gpus"]:
            lines.append(
                f"GPU {g['index']}: {g['name']}, {g['memory_used_mb']:.0f}/{g['memory_total_mb']:.0f} MiB used, driver {g['driver']}"
            )
    else:
        lines.append(f"GPUs: none found ({report['nvml_error'] or 'NVML reports no devices'})")
    if report["policy"] == "auto":
        device = "the CPU" if report["runs_on"] == CPU else report["runs_on"]
        lines.append(f"Device policy auto: models will run on {device}.")
    elif report["ok"]:
        lines.append(f"Device policy {report['policy']}: met, models will run on {report['runs_on']}.")
    else:
        lines.append(f"Device policy {report['policy']}: CANNOT be met on this machine.")
    for fix in report["fixes"]:
        lines.append(f"Fix: {fix}")
    return "\n".join(lines)
