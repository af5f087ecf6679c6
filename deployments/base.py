"""What every model replica shares: load the adapter, batching knobs, stats, metrics, health."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from ray import serve
from ray.serve import metrics

from facegraph.graph.config import Batching
from facegraph.graph.core.stages import answered_by, load_stage
from facegraph.graph.process import assigned_resources, rss_mb
from facegraph.models.registry import ModelSpec

logger = logging.getLogger(__name__)

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


def batch_metrics(stage: str) -> tuple[metrics.Histogram, metrics.Histogram]:
    """Items per batch call and time per batch call, tagged with the stage."""
    batch = metrics.Histogram("facegraph_batch_size", "Items per model call", boundaries=BATCH_BOUNDARIES, tag_keys=("stage",))
    batch.set_default_tags({"stage": stage})  # a fresh dict each: Serve adds its own keys in place
    latency = metrics.Histogram(
        "facegraph_model_latency_ms", "Model call time per batch", boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage",)
    )
    latency.set_default_tags({"stage": stage})
    return batch, latency


def replica_id() -> str:
    """This replica's id in Serve ("" outside a replica)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a Serve replica (unit use)
        return ""


async def in_batches(method, items: Sequence, size: int, wrap: Callable[[Sequence], Any] | None = None) -> list[Any]:
    """Call a ``@serve.batch`` method on ``items`` in pieces of at most ``size`` (its live ``max_batch_size``).

    One request may carry any number of faces; Serve refuses an item larger than the batch, so the
    replica that owns the batch size splits the request itself. The pieces are awaited concurrently,
    so they join batches with other requests' items. ``wrap`` makes a batch item of a piece.
    Returns each piece's result in order.
    """
    pieces = [items[i : i + size] for i in range(0, len(items), size)]
    return list(await asyncio.gather(*(method(wrap(p) if wrap else p) for p in pieces)))


def faces_in(groups: Sequence[Sequence]) -> int:
    """A batch's size in faces, not requests: the ``batch_size_fn`` of the crop stages."""
    return sum(len(g) for g in groups)


def apply_batching(method, user_config: dict) -> Batching:
    """Set a ``@serve.batch`` method's knobs from a ``user_config`` (the config's ``batching``); returns them."""
    batching = Batching.model_validate(user_config)
    method.set_max_batch_size(batching.max_batch_size)
    method.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
    return batching


class ModelReplica:
    """Base of the model deployments. Subclasses set ``stage`` and name their batch method."""

    stage: str = ""

    def __init__(self, spec: ModelSpec, cache_dir: Path | None):
        resources = assigned_resources()
        self.loaded = load_stage(spec, self.stage, cache_dir, resources)
        self.adapter = self.loaded.adapter
        # What this replica runs, as every answer it takes part in reports it.
        self.model: dict[str, Any] = answered_by(self.loaded)
        # The batch knobs Serve's ``reconfigure`` gives (the config's ``batching``); the config's defaults until then.
        self.batching = Batching()
        self.gpu_fraction = resources[0]
        self.warmup_ms: float | None = None
        self.warmup_error: str | None = None
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.items = 0
        self.m_batch, self.m_latency = batch_metrics(self.stage)
        self.m_fallbacks = metrics.Counter(
            "facegraph_provider_fallbacks", "Execution providers that fell back at load", tag_keys=("stage", "provider")
        )
        for report in self.loaded.reports.values():
            for fallback in report.fallbacks:
                self.m_fallbacks.inc(tags={"stage": self.stage, "provider": fallback.provider})
        logger.info("%s replica (pid %s) runs %s on %s", self.stage, os.getpid(), self.loaded.spec.family, self.loaded.provider)

    # Subclasses return their @serve.batch-wrapped method here.
    def batch_method(self):
        raise NotImplementedError

    def reconfigure(self, user_config: dict) -> None:
        """Change batching at run time (Serve calls this on ``user_config`` updates, and at start)."""
        before = self.batching.max_batch_size
        self.batching = apply_batching(self.batch_method(), user_config)
        if self.warmup_ms is None or self.batching.max_batch_size != before:
            self.warm_up()

    def warm_up(self) -> None:
        """Run the model at batch 1 and at the largest batch before serving.

        TensorRT builds (or loads from ``trt_cache_dir``) its engine and CUDA grows its arena and
        picks convolution algorithms on the first call of a shape: done here, the first user
        request does not pay for it. Serve runs this before the replica takes traffic.
        """
        started = time.perf_counter()
        self.warmup_error = None
        for size in sorted({1, self.batching.max_batch_size}):
            try:
                self.warm(size)
            except Exception as exc:  # serving goes on: a failing batch becomes its requests' errors
                self.warmup_error = f"batch of {size}: {type(exc).__name__}"
                logger.warning("%s replica failed to warm up at a %s", self.stage, self.warmup_error)
                break
        self.warmup_ms = round((time.perf_counter() - started) * 1000, 1)
        logger.info("%s replica warmed up on %s in %.0f ms", self.stage, self.loaded.provider, self.warmup_ms)

    async def run_faces(self, fn, groups: list) -> list:
        """One batch of several requests' crops through ``fn(adapter, groups)`` off the event loop, recorded by face count."""
        started = time.perf_counter()
        out = await asyncio.to_thread(fn, self.adapter, groups)
        self.record(sum(len(g) for g in groups), started)
        return out

    def record(self, size: int, started: float) -> None:
        self.batch_sizes[size] += 1
        self.items += size
        self.m_batch.observe(size)
        self.m_latency.observe((time.perf_counter() - started) * 1000)

    def check_health(self) -> None:
        """Serve's periodic health check: a tiny real inference must succeed."""
        self.probe()

    def probe(self) -> None:
        """The health check's inference: one item."""
        self.warm(1)

    def warm(self, batch_size: int) -> None:
        """Run the model on ``batch_size`` blank inputs."""
        raise NotImplementedError

    def describe(self) -> dict:
        batches = sum(self.batch_sizes.values())
        return {
            **self.loaded.describe(),
            "gpu_fraction": self.gpu_fraction,
            "replica_id": replica_id(),
            "replica_pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "rss_mb": rss_mb(),
            "warmup_ms": self.warmup_ms,
            "warmup_error": self.warmup_error,
            "batching": {
                **self.batching.model_dump(),
                "batches": batches,
                "items": self.items,
                "mean_batch_size": round(self.items / batches, 3) if batches else None,
                "batch_size_counts": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            },
        }

