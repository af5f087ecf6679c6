"""GPU inventory through NVML (pynvml from nvidia-ml-py), safe without a driver."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_nvml_state: dict[str, object] = {}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_used_mb: float
    memory_total_mb: float
    memory_percent: float
    driver: str

    def to_json(self) -> dict:
        return asdict(self)


def _nvml():
    """Return the initialised pynvml module, or None with the reason recorded."""
    with _lock:
        if "module" in _nvml_state:
            return _nvml_state["module"]
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError
            _nvml_state["module"] = None
            _nvml_state["error"] = f"{type(exc).__name__}: {exc}"
        else:
            _nvml_state["module"] = pynvml
        return _nvml_state["module"]


def nvml_error() -> str | None:
    """Why NVML is unavailable (e.g. no NVIDIA driver), or None when it works."""
    _nvml()
    return _nvml_state.get("error")  # type: ignore[return-value]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def list_gpus() -> list[GpuInfo]:
    """All GPUs the driver sees (ignores CUDA_VISIBLE_DEVICES); empty without a driver."""
    nvml = _nvml()
    if nvml is None:
        return []
    gpus = []
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                memory_used_mb=round(mem.used / 2**20, 1),
                memory_total_mb=round(mem.total / 2**20, 1),
                memory_percent=round(100.0 * mem.used / mem.total, 1) if mem.total else 0.0,
                driver=driver,
            )
        )
    return gpus


def visible_gpu() -> GpuInfo | None:
    """The GPU this process's CUDA device 0 maps to (first CUDA_VISIBLE_DEVICES entry)."""
    gpus = list_gpus()
    if not gpus:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() == "":
        return gpus[0] if visible is None else None
    first = visible.split(",")[0].strip()
    for gpu in gpus:
        if first.isdigit() and gpu.index == int(first):
            return gpu
        if not first.isdigit() and gpu.uuid.startswith(first):
            return gpu
    return None
