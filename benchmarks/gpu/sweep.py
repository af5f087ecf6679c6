"""Batch sweeps of every model on every execution provider, straight on ONNX Runtime sessions.

Each model is swept as its own ONNX file(s) with a fixed input shape per file (MTCNN:
P-Net on a 640 x 360 level, R-Net and O-Net on their crops), on the CPU, on CUDA in
fp32, on CUDA with the float16 variant ``facegraph optimize`` makes, and on TensorRT in
fp16 with an engine cache. A provider that does not really run (``create_session``
reads back the one that does) is recorded with its reason, not timed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from facegraph.models.errors import ProviderUnavailableError
from facegraph.models.runtime import CPU, CUDA, TRT, RuntimeOptions, create_session


@dataclass(frozen=True)
class Subject:
    """One ONNX file to sweep: where its bytes come from and the input shape after the batch axis."""

    model: str
    part: str
    source: Callable[[], bytes]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Target:
    """A provider and a precision: what to build the session with."""

    name: str
    device: str
    fp16: bool
    provider: str


TARGETS = (
    Target("cpu fp32", "cpu", False, CPU),
    Target("cuda fp32", "cuda", False, CUDA),
    Target("cuda fp16", "cuda", True, CUDA),
    Target("tensorrt fp16", "tensorrt", False, TRT),
)


def pack_subjects(cache: Path) -> list[Subject]:
    """The default pack's files, each with the input shape it is swept at."""
    from facegraph.models.registry import pack_file

    def read(pack: str, name: str) -> Callable[[], bytes]:
        return lambda: pack_file(cache, pack, name, "fp32").read_bytes()

    return [
        Subject("blazeface", "model", read("blazeface", "model"), (3, 192, 192)),
        Subject("centerface", "model", read("centerface", "model"), (3, 480, 480)),
        Subject("mtcnn", "pnet", read("mtcnn", "pnet"), (3, 360, 640)),
        Subject("mtcnn", "rnet", read("mtcnn", "rnet"), (3, 24, 24)),
        Subject("mtcnn", "onet", read("mtcnn", "onet"), (3, 48, 48)),
        Subject("dlib-resnet", "model", read("dlib-resnet", "model"), (3, 150, 150)),
    ]


def heavy_subjects(scale: float) -> list[Subject]:
    from facegraph.benchmarks.gpu.heavy import arcface_shaped, vit_shaped

    return [
        Subject("arcface-r50-shaped", "model", lambda: arcface_shaped(scale), (3, 112, 112)),
        Subject("vit-b16-shaped", "model", lambda: vit_shaped(scale), (3, 224, 224)),
    ]


def to_fp16(model: bytes) -> bytes:
    """The float16 variant as ``facegraph optimize --to fp16`` makes it (float32 inputs and outputs)."""
    from facegraph.models.optimize import fp16_model

    return fp16_model(onnx.load_from_string(model))[0].SerializeToString()


def _time(session, name: str, batch: np.ndarray, min_s: float, max_calls: int) -> tuple[int, float]:
    session.run(None, {name: batch})  # the first call of a shape allocates (and builds TensorRT engines)
    calls, spent = 0, 0.0
    while calls < 2 or (spent < min_s and calls < max_calls):
        started = time.perf_counter()
        session.run(None, {name: batch})
        spent += time.perf_counter() - started
        calls += 1
    return calls, spent


def sweep(subject: Subject, target: Target, sizes: Sequence[int], min_s: float, max_calls: int, deadline: float, trt_cache: Path | None) -> dict:
    """One subject on one target: ms per call and items/s per batch size, or why it did not run."""
    row: dict = {"model": subject.model, "part": subject.part, "target": target.name, "input": list(subject.shape)}
    try:
        model = subject.source()
        if target.fp16:
            model = to_fp16(model)
        # The CPU with every core, as a CPU-only deployment of the same machine would run it.
        threads = (os.cpu_count() or 1) if target.device == "cpu" else 1
        options = RuntimeOptions(device=target.device, cpu_threads=threads, trt_cache_dir=str(trt_cache) if trt_cache else None)
        session, report = create_session(model, options)
    except ProviderUnavailableError as exc:
        return {**row, "ran": False, "reason": exc.message}
    except Exception as exc:  # a provider may fail in ways we cannot foresee: record it, go on
        return {**row, "ran": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
    row.update(provider=report.active, gpu_mem_limit_mb=report.gpu_mem_limit_mb)
    if report.active != target.provider:
        return {**row, "ran": False, "reason": f"runs on {report.active}: " + "; ".join(f.reason for f in report.fallbacks)}
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    points = []
    for size in sizes:
        if time.perf_counter() > deadline:
            row["stopped"] = f"time budget spent before batch {size}"
            break
        batch = rng.uniform(-1, 1, (size, *subject.shape)).astype(np.float32)
        started = time.perf_counter()
        try:
            calls, spent = _time(session, name, batch, min_s, max_calls)
        except Exception as exc:  # out of memory at a large batch, say
            row["stopped"] = f"batch {size}: {type(exc).__name__}: {exc}"[:300]
            break
        points.append(
            {
                "batch_size": size,
                "calls": calls,
                "first_call_s": round(time.perf_counter() - started - spent, 3),
                "ms_per_call": round(spent * 1000 / calls, 3),
                "items_per_s": round(size * calls / spent, 1),
            }
        )
    best = max(points, key=lambda p: p["items_per_s"]) if points else None
    return {**row, "ran": bool(points), "points": points, "best_items_per_s": best["items_per_s"] if best else None, "best_batch": best["batch_size"] if best else None}
