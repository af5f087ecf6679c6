"""Closed-loop load: N concurrent clients, each sending the next picture of the mix as soon as
its previous answer is back; a warm-up, then a measured window."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

import numpy as np
from tqdm import tqdm

from facegraph.benchmarks.pictures import Picture
from facegraph.benchmarks.stats import summary_ms

Send = Callable[[Picture], Awaitable[dict]]
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Phase:
    warmup_s: float
    measure_s: float


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    faces: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    completed: int = 0


def _stage_summary(timings: list[dict], latencies_ms: list[float]) -> dict:
    """Mean and p50 of every ``timings_ms`` key, plus the time spent outside the answer's ``total``."""
    keys = sorted({k for t in timings for k in t})
    out = {}
    for key in keys:
        values = np.asarray([t[key] for t in timings if key in t], np.float64)
        out[key] = {"mean_ms": round(float(values.mean()), 3), "p50_ms": round(float(np.median(values)), 3), "count": int(values.size)}
    outside = [lat - t["total"] for lat, t in zip(latencies_ms, timings) if "total" in t]
    if outside:
        out["outside_total"] = {"mean_ms": round(float(np.mean(outside)), 3), "p50_ms": round(float(np.median(outside)), 3), "count": len(outside)}
    return out


async def closed_loop(send: Send, pictures: Sequence[Picture], concurrency: int, phase: Phase, desc: str, progress: bool = True) -> dict:
    """Run ``concurrency`` clients through warm-up and the measured window; summarise the window."""
    order = itertools.count()
    begin = time.perf_counter()
    window_start = begin + phase.warmup_s
    window_end = window_start + phase.measure_s
    tally = _Tally()

    async def client() -> None:
        while time.perf_counter() < window_end:
            picture = pictures[next(order) % len(pictures)]
            t0 = time.perf_counter()
            try:
                answer = await send(picture)
            except Exception as exc:  # counted, never fatal: overload shows as errors
                answer, error = None, type(exc).__name__
            t1 = time.perf_counter()
            if not (window_start <= t1 <= window_end):
                continue
            if answer is None:
                tally.errors[error] = tally.errors.get(error, 0) + 1
                continue
            tally.completed += 1
            tally.latencies_ms.append((t1 - t0) * 1000)
            tally.timings.append(answer.get("timings_ms") or {})
            tally.faces.append(len(answer.get("faces") or ()))

    bar = tqdm(total=round(phase.warmup_s + phase.measure_s, 1), desc=desc, leave=False, disable=not progress, bar_format="{desc}: {n:.1f}/{total} s {postfix}")
    tasks = [asyncio.ensure_future(client()) for _ in range(concurrency)]
    while time.perf_counter() < window_end:
        await asyncio.sleep(0.25)
        bar.n = round(min(time.perf_counter() - begin, bar.total), 1)
        bar.set_postfix_str(f"{tally.completed} answers")
    bar.close()
    # Let the requests in flight finish (not counted) so the next run starts from an idle graph.
    done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    return {
        "concurrency": concurrency,
        "window_s": phase.measure_s,
        "requests": tally.completed,
        "errors": dict(tally.errors),
        "throughput_rps": round(tally.completed / phase.measure_s, 3),
        "latency": summary_ms(tally.latencies_ms),
        "faces_per_answer": round(float(np.mean(tally.faces)), 3) if tally.faces else 0.0,
        "stage_ms": _stage_summary(tally.timings, tally.latencies_ms),
        "drain_timed_out": bool(pending),
    }


def http_sender(session, url: str) -> Send:
    """POST the picture's JPEG to ``url``; the JSON answer, or an exception on any non-200."""

    async def send(picture: Picture) -> dict:
        async with session.post(url, data=picture.jpeg, headers={"content-type": "image/jpeg"}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise HttpStatusError(resp.status)
            return body

    return send


def handle_sender(handle) -> Send:
    """``await handle.analyze.remote(jpeg)`` on the app's ingress handle."""

    async def send(picture: Picture) -> dict:
        return await handle.analyze.remote(picture.jpeg)

    return send


class HttpStatusError(RuntimeError):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status
