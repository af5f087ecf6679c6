"""What the approximate-search benchmarks (``gallery_ann``, ``gallery_postgres``) share.

The synthetic gallery's shape, timing one search at a time and in batches, and scoring a search's
rankings against exact search and against the identity each probe was drawn from. Each benchmark
keeps its own noise model and enrolment order: those decide its numbers.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

from facegraph.benchmarks.stats import summary_ms

SPACE = "synthetic:0000000000000000:fp32"
DIMENSION = 128
SAMPLES = 5  # faces per identity

Result = TypeVar("Result")


def full_batches(probes: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of ``size`` probes; a last, shorter batch is left out so every call is the same size."""
    return [probes[start : start + size] for start in range(0, len(probes) - size + 1, size)]


def time_search(
    search: Callable[[np.ndarray], Sequence[Result]], singles: np.ndarray, batches: Sequence[np.ndarray]
) -> tuple[list[Result], dict, dict]:
    """Time ``search`` (probes (n, DIMENSION) -> one result per probe) on each probe alone, then on each batch.

    Returns:
        Each single probe's result, and the ms summaries (``summary_ms``) of the single and the batched calls.
    """
    found, single = [], []
    for probe in singles:
        t0 = time.perf_counter()
        found.append(search(probe[None])[0])
        single.append((time.perf_counter() - t0) * 1000)
    batched = []
    for batch in batches:
        t0 = time.perf_counter()
        search(batch)
        batched.append((time.perf_counter() - t0) * 1000)
    return found, summary_ms(single), summary_ms(batched)


def top1_share(rankings: Sequence[Sequence[Hashable]], expected: Sequence[Hashable]) -> float:
    """The share of rankings whose first entry is the expected one; an empty ranking misses."""
    return float(np.mean([bool(r) and r[0] == x for r, x in zip(rankings, expected)]))


def overlap_share(rankings: Sequence[Sequence[Hashable]], exact: Sequence[Sequence[Hashable]]) -> float:
    """Recall@k: the mean share of each exact ranking (k entries) that the other ranking also returns."""
    return float(np.mean([len(set(r) & set(e)) / max(len(e), 1) for r, e in zip(rankings, exact)]))
