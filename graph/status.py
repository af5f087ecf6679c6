"""Health, readiness and the models report, asked of the running app each time (nothing cached for good).

``serve.status()`` is a blocking call to the Serve controller: it runs in a thread, and concurrent
callers within :data:`STATUS_TTL_S` share one answer, so polling ``/ready`` never stalls the
event loop that also carries analyze traffic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Any

from ray import serve

from facegraph.graph.process import rss_mb
from facegraph.models.gpu import list_gpus

logger = logging.getLogger(__name__)

# A readiness answer may be this old: each serve.status() costs the controller and this process CPU
# (measured: at 0.5 s, /ready polled every 100 ms under load slowed analyze p50 by 13-18 %).
STATUS_TTL_S = 2.0
REPLY_TIMEOUT_S = 5.0


def _value(state) -> str:
    return str(getattr(state, "value", state))


class ServeStatus:
    """``serve.status()`` off the event loop, one call in flight, answers reused for a moment."""

    def __init__(self, app_name: str, ttl_s: float = STATUS_TTL_S, fetch=None, clock=time.monotonic):
        self.app_name, self.ttl_s = app_name, ttl_s
        self._fetch = fetch or serve.status
        self._clock = clock
        self._at = -float("inf")
        self._value = None
        self._pending: asyncio.Future | None = None

    async def application(self):
        if self._clock() - self._at <= self.ttl_s:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._refresh())
        pending = self._pending
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None

    async def _refresh(self):
        try:
            status = await asyncio.to_thread(self._fetch)
            self._value = status.applications.get(self.app_name)
        except Exception as exc:  # the controller is away: report nothing rather than fail
            logger.warning("serve status unavailable: %s", type(exc).__name__)
            self._value = None
        self._at = self._clock()
        return self._value

    async def deployment_states(self) -> dict[str, str]:
        application = await self.application()
        return {} if application is None else {name: _value(d.status) for name, d in application.deployments.items()}

    async def replica_counts(self) -> dict[str, dict[str, int]]:
        application = await self.application()
        if application is None:
            return {}
        return {name: {_value(k): v for k, v in d.replica_states.items()} for name, d in application.deployments.items()}


def merge_batching(replicas: list[dict]) -> dict:
    """The stage's batching over all its replicas: sizes set, batches, items and sizes summed."""
    counts: collections.Counter[str] = collections.Counter()
    for info in replicas:
        counts.update(info["batching"]["batch_size_counts"])
    batches = sum(r["batching"]["batches"] for r in replicas)
    items = sum(r["batching"]["items"] for r in replicas)
    sizes = sorted({r["batching"]["max_batch_size"] for r in replicas})
    return {
        "max_batch_size": sizes[0] if len(sizes) == 1 else sizes,
        "batch_wait_timeout_s": replicas[0]["batching"]["batch_wait_timeout_s"],
        "batches": batches,
        "items": items,
        "mean_batch_size": round(items / batches, 3) if batches else None,
        "batch_size_counts": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
    }


class Status:
    """``/health``, ``/ready`` and ``/v1/models`` over the stages' handles."""

    def __init__(self, stages: dict[str, Any], deployment_names: dict[str, str], serve_status: ServeStatus):
        self.stages = stages  # stage -> handle, configured stages only
        self.names = deployment_names
        self.serve_status = serve_status

    async def health(self) -> dict:
        """Liveness; ``models_loaded``: a replica of every model stage answered just now."""
        try:
            await asyncio.wait_for(asyncio.gather(*(h.describe.remote() for h in self.stages.values())), REPLY_TIMEOUT_S)
            loaded = True
        except Exception:
            loaded = False
        gpus = [
            {"index": g.index, "name": g.name, "memory_used_mb": g.memory_used_mb, "memory_total_mb": g.memory_total_mb, "memory_percent": g.memory_percent}
            for g in list_gpus()
        ]
        return {"status": "ok", "models_loaded": loaded, "gpu_available": bool(gpus), "gpus": gpus}

    async def ready(self) -> tuple[bool, dict[str, str]]:
        states = await self.serve_status.deployment_states()
        return bool(states) and all(s == "HEALTHY" for s in states.values()), states

    async def models(self) -> dict:
        """Per stage: every replica's own report, and their batching merged."""
        replies = await asyncio.gather(
            *(h.broadcast("describe").results_async(timeout_s=REPLY_TIMEOUT_S, return_exceptions=True) for h in self.stages.values())
        )
        counts = await self.serve_status.replica_counts()
        out: dict[str, Any] = {}
        for stage, results in zip(self.stages, replies):
            replicas = sorted((r for r in results if isinstance(r, dict)), key=lambda r: r["replica_id"])
            if not replicas:
                out[stage] = {"configured": True, "replicas": counts.get(self.names[stage]), "answered": 0}
                continue
            # The stage's model as its first replica reports it; during a rolling update see "per_replica".
            out[stage] = {
                **{k: v for k, v in replicas[0].items() if k not in ("batching", "replica_id", "replica_pid", "rss_mb", "warmup_ms", "warmup_error", "node_id", "gpu_ids")},
                "configured": True,
                "replicas": counts.get(self.names[stage]),
                "answered": len(replicas),
                "batching": merge_batching(replicas),
                "per_replica": replicas,
            }
        for stage in ("recognizer", "deepfake"):
            out.setdefault(stage, {"configured": False})
        out["ingress"] = {"replica_pid": os.getpid(), "rss_mb": rss_mb(), "peak_rss_mb": rss_mb("VmHWM")}
        return out
