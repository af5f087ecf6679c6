"""What Ray gave this process, and what it holds: shared by Serve replicas and Ray Data actors."""

from __future__ import annotations


def assigned_resources() -> tuple[float, float]:
    """(GPU fraction, CPU share) this replica or actor was scheduled with; (0, 1) outside Ray."""
    import ray

    if not ray.is_initialized():  # asking the runtime context would start a local Ray
        return 0.0, 1.0
    try:
        resources = ray.get_runtime_context().get_assigned_resources()
    except Exception:  # outside a Ray worker (unit use)
        return 0.0, 1.0
    return float(resources.get("GPU", 0.0)), float(resources.get("CPU", 1.0))


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory in MiB (``VmHWM``: its peak), from Linux /proc; 0 elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
