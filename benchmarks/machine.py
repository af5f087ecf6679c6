"""What the benchmark ran on (machine, versions, date) and the loopback-only guard."""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import socket
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
NAMESPACE_HINT = (
    "RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c "
    "'ip link set lo up && .venv/bin/facegraph bench --out bench-out'"
)


class NetworkNotIsolatedError(RuntimeError):
    """A non-loopback interface is up: the benchmark would start servers reachable from outside."""


def _flags(sock: socket.socket, name: str) -> int:
    request = struct.pack("16sH14x", name.encode()[:15], 0)
    return struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]


def interfaces_up() -> dict[str, bool]:
    """Interface name -> is it a loopback interface, for every interface that is up.

    Asks the kernel through this process's own socket (SIOCGIFFLAGS), so it sees the
    network namespace the process runs in; /sys/class/net shows the namespace sysfs was
    mounted in.
    """
    up: dict[str, bool] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                flags = _flags(sock, name)
            except OSError:
                continue
            if flags & IFF_UP:
                up[name] = bool(flags & IFF_LOOPBACK)
    return up


def loopback_up(name: str = "lo") -> None:
    """Bring the loopback interface up (root), as ``ip link set lo up`` does, where ``ip`` is not installed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = _flags(sock, name)
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name.encode()[:15], flags | IFF_UP))


def require_loopback_only() -> None:
    """Refuse to go on unless the only interfaces up are loopback ones (and one is up).

    The benchmark starts Ray, Serve and plain HTTP services; Ray's servers bind every
    address, so it must run in a private network namespace. It never creates one itself.
    """
    up = interfaces_up()
    outside = sorted(name for name, loopback in up.items() if not loopback)
    if outside:
        raise NetworkNotIsolatedError(
            f"non-loopback network interfaces are up ({', '.join(outside)}); the benchmark starts Ray and HTTP "
            f"servers and must run in a private network namespace with only loopback, as root:\n  {NAMESPACE_HINT}"
        )
    if not any(up.values()):
        raise NetworkNotIsolatedError(f"no loopback interface is up; bring it up first (`ip link set lo up`):\n  {NAMESPACE_HINT}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "absent"
    return str(getattr(mod, "__version__", "unknown"))


@dataclass(frozen=True)
class MachineInfo:
    cpu: str
    cpu_count: int
    gpus: tuple[str, ...]
    memory_gib: float
    python: str
    ray: str
    onnxruntime: str
    numpy: str
    platform: str
    date: str

    def to_json(self) -> dict:
        return {**asdict(self), "gpus": list(self.gpus)}

    def caption(self) -> str:
        """The one-line footer every figure carries."""
        gpu = ", ".join(self.gpus) if self.gpus else "no GPU"
        return (
            f"{self.cpu} x{self.cpu_count}, {gpu} | ray {self.ray}, onnxruntime {self.onnxruntime}, "
            f"numpy {self.numpy}, python {self.python} | {self.date}"
        )


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def machine_info() -> MachineInfo:
    from facegraph.models.gpu import list_gpus

    gpus = tuple(f"{g.name} ({g.memory_total_mb:.0f} MiB)" for g in list_gpus())
    return MachineInfo(
        cpu=cpu_model(),
        cpu_count=os.cpu_count() or 1,
        gpus=gpus,
        memory_gib=_memory_gib(),
        python=platform.python_version(),
        ray=_version("ray"),
        onnxruntime=_version("onnxruntime"),
        numpy=_version("numpy"),
        platform=platform.platform(),
        date=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )
