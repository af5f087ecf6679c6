"""Which CUDA libraries ONNX Runtime's GPU providers need, which are missing here, and the fix.

onnxruntime-gpu does not raise when they are missing: it writes to stderr and runs on the CPU.
``models.runtime`` captures that stderr (:func:`captured_stderr`) and asks here what to say.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import onnxruntime as ort

from facegraph.models.gpu import nvml_error

CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"

_capture_lock = threading.Lock()
_preload_lock = threading.Lock()
_preload_done: list[str] = []


@contextlib.contextmanager
def captured_stderr(lines: list[str]):
    """Collect what native code writes to fd 2 (ONNX Runtime's logger) into ``lines``."""
    with _capture_lock, tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def preload_cuda_libraries() -> list[str]:
    """Call ``onnxruntime.preload_dlls()`` once per process; returns what it printed."""
    with _preload_lock:
        if _preload_done or not hasattr(ort, "preload_dlls"):
            return list(_preload_done)
        lines: list[str] = []
        out = tempfile.TemporaryFile(mode="w+")
        with contextlib.redirect_stdout(out), captured_stderr(lines):
            try:
                ort.preload_dlls()
            except Exception as exc:  # a broken nvidia-* wheel must not stop CPU serving
                lines.append(f"preload_dlls failed: {exc}")
        out.seek(0)
        lines = out.read().splitlines() + lines
        _preload_done.extend(lines or ["ok"])
        return lines


def cuda_build_version() -> str | None:
    """The CUDA version this onnxruntime build targets (``13.0``), or None for CPU builds."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def _provider_library(provider: str) -> Path | None:
    name = {CUDA: "libonnxruntime_providers_cuda.so", TRT: "libonnxruntime_providers_tensorrt.so"}.get(provider)
    if name is None:
        return None
    path = Path(ort.__file__).parent / "capi" / name
    return path if path.exists() else None


def missing_provider_libraries(provider: str) -> list[str]:
    """Shared libraries a provider needs that cannot be loaded in this process.

    Reads the provider library's dependencies with ``ldd`` and re-tries each one
    ldd cannot find with ``dlopen``, since ``preload_dlls()`` may have loaded it
    from an ``nvidia-*`` wheel already.
    """
    library = _provider_library(provider)
    if library is None or shutil.which("ldd") is None:
        return []
    try:
        out = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    missing = []
    for name in re.findall(r"^\s*(\S+) => not found", out, flags=re.M):
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def fix_for(missing: list[str] | tuple[str, ...]) -> str:
    """The exact remedy for missing CUDA libraries."""
    version = ort.__version__
    cuda = cuda_build_version() or "?"
    major = cuda.split(".")[0]
    parts = []
    if any(name.startswith("libcuda.so") for name in missing) or nvml_error():
        parts.append("install the NVIDIA driver (libcuda.so.1, libnvidia-ml.so.1 come with it) on a machine with an NVIDIA GPU")
    if any(not name.startswith("libcuda.so") for name in missing) or not missing:
        parts.append(
            f"install the CUDA {major} and cuDNN 9 libraries this onnxruntime-gpu {version} was built for: "
            f"pip install 'onnxruntime-gpu[cuda,cudnn]=={version}'; or install an onnxruntime-gpu build that "
            "matches the CUDA major version already installed (onnxruntime-gpu<1.27 for CUDA 12)"
        )
    if any(name.startswith(("libnvinfer", "libnvonnxparser")) for name in missing):
        parts.append(f"for TensorRT, install TensorRT 10 for CUDA {major}: pip install tensorrt-cu{major}")
    return "; ".join(parts)
