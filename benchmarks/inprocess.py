"""The ceiling: the whole pipeline in one Python process, no framework in between.

Decode, detect, align and crop (``detect_batch``), recognize (``embed_batch``) and classify
(``classify_batch``): the very functions the deployments call, on the same models and
pictures, one picture at a time and in batches.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm import tqdm

from facegraph.benchmarks.models_bench import load_stage, stages_of
from facegraph.benchmarks.pictures import Picture
from facegraph.benchmarks.stats import summary_ms
from facegraph.graph.config import FacegraphConfig
from facegraph.models.pipeline import DetectRequest, classify_batch, detect_batch, embed_batch
from facegraph.models.registry import LoadedModel


class Pipeline:
    """Loaded models and the crop specs the detector must cut for the branches."""

    def __init__(self, config: FacegraphConfig, threads: int | None):
        self.max_pixels = config.ingress.max_pixels
        self.models: dict[str, LoadedModel] = {name: load_stage(config, name, threads) for name in stages_of(config)}
        self.specs = {name: m.adapter.crop_spec for name, m in self.models.items() if name != "detector"}
        self.threads = self.models["detector"].describe()["intra_op_threads"]

    def analyze(self, images: Sequence[bytes]) -> int:
        """Run the pipeline over encoded pictures as one batch per stage; returns the faces found."""
        requests = [DetectRequest(image=image, crops=self.specs) for image in images]
        replies = detect_batch(self.models["detector"].adapter, requests, self.max_pixels)
        if "recognizer" in self.models:
            embed_batch(self.models["recognizer"].adapter, [r.crops["recognizer"] for r in replies])
        if "deepfake" in self.models:
            classify_batch(self.models["deepfake"].adapter, [r.crops["deepfake"] for r in replies])
        return sum(len(r.faces) for r in replies)


def _measure(pipeline: Pipeline, pictures: Sequence[Picture], batch: int, seconds: float, label: str, progress: bool) -> dict:
    pipeline.analyze([pictures[0].jpeg])  # warm-up
    latencies, done, index = [], 0, 0
    bar = tqdm(total=round(seconds, 1), desc=f"in-process {label}", unit="s", leave=False, disable=not progress, bar_format="{desc}: {n:.1f}/{total} s")
    started = time.perf_counter()
    while True:
        chunk = [pictures[(index + i) % len(pictures)].jpeg for i in range(batch)]
        index += batch
        t0 = time.perf_counter()
        pipeline.analyze(chunk)
        latencies.append((time.perf_counter() - t0) * 1000)
        done += batch
        elapsed = time.perf_counter() - started
        bar.n = round(min(elapsed, seconds), 1)
        bar.refresh()
        # Whole passes over the mix where time allows, so every picture counts equally.
        if elapsed >= seconds and (index % len(pictures) < batch or elapsed >= 2 * seconds):
            break
    bar.close()
    return {
        "batch_size": batch,
        "intra_op_threads": pipeline.threads,
        "pictures": done,
        "seconds": round(elapsed, 3),
        "throughput_rps": round(done / elapsed, 3),
        "call_latency": summary_ms(latencies),
    }


def _measure_parallel(pipeline: Pipeline, pictures: Sequence[Picture], workers: int, seconds: float, progress: bool) -> dict:
    """``workers`` threads, each analysing one picture at a time (ONNX Runtime releases the GIL)."""
    pipeline.analyze([pictures[0].jpeg])  # warm-up
    order = itertools.count()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            picture = pictures[next(order) % len(pictures)]
            t0 = time.perf_counter()
            pipeline.analyze([picture.jpeg])
            latencies.append((time.perf_counter() - t0) * 1000)

    bar = tqdm(total=round(seconds, 1), desc=f"in-process {workers} threads", leave=False, disable=not progress, bar_format="{desc}: {n:.1f}/{total} s")
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        while not all(f.done() for f in futures):
            time.sleep(0.25)
            bar.n = round(min(time.perf_counter() - started, seconds), 1)
            bar.refresh()
        for future in futures:
            future.result()
    bar.close()
    elapsed = time.perf_counter() - started
    return {
        "batch_size": 1,
        "workers": workers,
        "intra_op_threads": pipeline.threads,
        "pictures": len(latencies),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 3),
        "call_latency": summary_ms(latencies),
    }


def bench_inprocess(config: FacegraphConfig, pictures: Sequence[Picture], seconds: float, progress: bool = True) -> dict:
    """Sequential (batch 1) and batched runs with every core; sequential at the replicas' thread count, and as
    many of those pipelines in parallel threads as there are cores."""
    cores = os.cpu_count() or 1
    batch = config.detector.deployment.batching.max_batch_size
    full = Pipeline(config, threads=cores)
    modes = {
        "sequential": _measure(full, pictures, 1, seconds, "batch 1", progress),
        "batched": _measure(full, pictures, batch, seconds, f"batch {batch}", progress),
    }
    del full
    replica_threads = Pipeline(config, threads=None)
    if replica_threads.threads != cores:
        modes["sequential_replica_threads"] = _measure(replica_threads, pictures, 1, seconds, "batch 1, replica threads", progress)
    if cores > 1:
        modes["parallel_threads"] = _measure_parallel(replica_threads, pictures, cores, seconds, progress)
    best = max(modes, key=lambda k: modes[k]["throughput_rps"])
    return {
        **modes,
        "saturation_mode": best,
        "saturation_rps": modes[best]["throughput_rps"],
        # One picture at a time is what a single client of the graph sees.
        "p50_ms_c1": modes["sequential"]["call_latency"]["p50_ms"],
        "p99_ms_c1": modes["sequential"]["call_latency"]["p99_ms"],
    }
