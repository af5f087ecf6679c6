"""Where the CPU goes: per-process CPU seconds from /proc, grouped by role (proxy, ingress, ...)."""

from __future__ import annotations

import os
import re
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_REPLICA = re.compile(r"ray::ServeReplica:[^:]*:(\w+)")


def _name(pid: str) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
    if match := _REPLICA.search(cmdline):
        return match.group(1)
    for needle, label in (("ProxyActor", "proxy"), ("ServeController", "serve controller"), ("raylet", "raylet"), ("gcs_server", "gcs")):
        if needle in cmdline:
            return label
    if cmdline.startswith("ray::"):
        return cmdline.split()[0]
    if "ray" in cmdline and ("dashboard" in cmdline or "log_monitor" in cmdline or "monitor.py" in cmdline):
        return "ray (other)"
    return Path(cmdline.split()[0]).name if cmdline else ""


def snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (role name, CPU seconds so far) for every process visible here."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
        out[int(entry.name)] = (_name(entry.name), cpu)
    return out


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], labels: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed by role; ``labels`` names pids explicitly."""
    labels = labels or {}
    totals: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        spent = cpu - before.get(pid, (name, 0.0))[1]
        if spent <= 0:
            continue
        role = labels.get(pid) or name or "other"
        totals[role] = totals.get(role, 0.0) + spent
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
