"""Ingress-side metrics through ``ray.serve.metrics`` (exported on each node's Prometheus endpoint).

Model replicas export ``facegraph_batch_size``, ``facegraph_model_latency_ms`` and
``facegraph_provider_fallbacks`` themselves (deployments/base.py).
"""

from __future__ import annotations

from functools import lru_cache

from ray.serve import metrics

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
FACE_BOUNDARIES = [0.5, 1, 2, 3, 5, 8, 13, 21, 50, 100]


class IngressMetrics:
    def __init__(self):
        self.request_latency = metrics.Histogram(
            "facegraph_request_latency_ms", "End-to-end request time in the ingress", boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route",)
        )
        self.stage_latency = metrics.Histogram(
            "facegraph_stage_latency_ms", "Time per stage as the ingress sees it", boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage",)
        )
        self.faces = metrics.Histogram("facegraph_faces_per_image", "Faces found per picture", boundaries=FACE_BOUNDARIES)
        self.errors = metrics.Counter("facegraph_errors", "Error answers by code", tag_keys=("code", "status"))


@lru_cache(maxsize=1)
def ingress_metrics() -> IngressMetrics:
    """Created lazily, inside the replica process."""
    return IngressMetrics()
