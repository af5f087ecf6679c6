"""Latency summaries shared by every benchmark part."""

from __future__ import annotations

import math
import statistics
from typing import Iterable

import numpy as np


def summary_ms(samples_ms: Iterable[float]) -> dict[str, float | int]:
    """count, mean, min, max, std, p50, p90, p99 of latencies in milliseconds."""
    values = np.asarray(list(samples_ms), dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean_ms": round(float(values.mean()), 3),
        "min_ms": round(float(values.min()), 3),
        "max_ms": round(float(values.max()), 3),
        "std_ms": round(float(values.std()), 3),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p90_ms": round(float(np.percentile(values, 90)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
    }


def finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return finite_or_none(round(a / b, digits))


def median_or_none(values: Iterable[float | None], digits: int = 3) -> float | None:
    """The median of the values that were measured (None: not measured), or None when none were."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else None
