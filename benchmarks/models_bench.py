"""Per-model figures: batch-1 latency statistics and a batch-size sweep, straight on the adapters.

Inputs are realistic: the detector gets the benchmark pictures (decoded), the recognizer
and the classifier get face crops cut from those pictures the way the graph cuts them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from facegraph.benchmarks.pictures import Picture
from facegraph.benchmarks.stats import summary_ms
from facegraph.graph.config import FacegraphConfig, StageConfig
from facegraph.models.geometry import crop_face
from facegraph.models.registry import LoadedModel, load_model
from facegraph.models.types import CropSpec, Face

ROLES = {"detector": "detector", "recognizer": "recognizer", "deepfake": "classifier"}


@dataclass(frozen=True)
class Budget:
    """How long each measurement may take."""

    batch1_iterations: int
    batch1_max_s: float
    sweep_sizes: tuple[int, ...]
    sweep_min_s: float
    sweep_max_calls: int


FULL = Budget(batch1_iterations=200, batch1_max_s=20.0, sweep_sizes=(1, 2, 4, 8, 16, 32, 64), sweep_min_s=2.0, sweep_max_calls=50)
QUICK = Budget(batch1_iterations=20, batch1_max_s=1.0, sweep_sizes=(1, 2, 4, 8), sweep_min_s=0.05, sweep_max_calls=3)


def stage_threads(stage: StageConfig) -> int:
    """ONNX Runtime intra-op threads a replica of this stage gets (as deployments/base.py does)."""
    return max(1, round(stage.deployment.num_cpus))


def stages_of(config: FacegraphConfig) -> dict[str, StageConfig]:
    return {name: stage for name in ROLES if (stage := getattr(config, name)) is not None}


def load_stage(config: FacegraphConfig, name: str, threads: int | None = None) -> LoadedModel:
    stage = getattr(config, name)
    return load_model(stage.model, cpu_threads=threads or stage_threads(stage), cache_dir=config.cache_dir(), role=ROLES[name])


def _call(model: LoadedModel, name: str) -> Callable[[Sequence[np.ndarray]], object]:
    method = {"detector": "detect", "recognizer": "embed", "deepfake": "classify"}[name]
    return getattr(model.adapter, method)


def face_crops(detector: LoadedModel, images: Sequence[np.ndarray], pictures: Sequence[Picture], spec: CropSpec) -> list[np.ndarray]:
    """Crops cut as the graph cuts them: from detected faces; pasted boxes where none was found."""
    crops = []
    for image, picture in zip(images, pictures):
        (faces,) = detector.adapter.detect([image])
        if not faces:
            faces = [Face(tuple(float(v) for v in box), 1.0, None) for box in picture.boxes]
        crops.extend(crop_face(image, face, spec) for face in faces)
    if not crops:  # a mix without faces: any crop of the right size will do
        width, height = spec.size
        crops = [np.full((height, width, 3), 128, np.uint8)]
    return crops


def _cycle(items: Sequence[np.ndarray], start: int, count: int) -> list[np.ndarray]:
    return [items[(start + i) % len(items)] for i in range(count)]


def bench_one(name: str, model: LoadedModel, inputs: Sequence[np.ndarray], budget: Budget, progress: bool = True) -> dict:
    """Batch-1 latency statistics and the batch sweep for one model."""
    run = _call(model, name)
    run(_cycle(inputs, 0, 2))  # warm-up: first calls allocate
    samples = []
    deadline = time.perf_counter() + budget.batch1_max_s
    bar = tqdm(range(budget.batch1_iterations), desc=f"{name} batch 1", leave=False, disable=not progress)
    for i in bar:
        t0 = time.perf_counter()
        run([inputs[i % len(inputs)]])
        samples.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() > deadline and len(samples) >= 5:
            break
    bar.close()
    sweep = []
    for size in tqdm(budget.sweep_sizes, desc=f"{name} batch sweep", leave=False, disable=not progress):
        calls, spent, start = 0, 0.0, 0
        while calls < 1 or (spent < budget.sweep_min_s and calls < budget.sweep_max_calls):
            batch = _cycle(inputs, start, size)
            start += size
            t0 = time.perf_counter()
            run(batch)
            spent += time.perf_counter() - t0
            calls += 1
        sweep.append(
            {
                "batch_size": size,
                "calls": calls,
                "mean_call_ms": round(spent * 1000 / calls, 3),
                "items_per_s": round(size * calls / spent, 3),
            }
        )
    batch1 = next(s["items_per_s"] for s in sweep if s["batch_size"] == 1)
    best = max(sweep, key=lambda s: s["items_per_s"])
    describe = model.describe()
    return {
        "family": model.spec.family,
        "source": model.spec.source,
        "provider": describe["provider"],
        "intra_op_threads": describe["intra_op_threads"],
        "input_pool": len(inputs),
        "input_shape": list(inputs[0].shape),
        "batch1": summary_ms(samples),
        "batch_sweep": sweep,
        "best_batch_size": best["batch_size"],
        "batching_gain": round(best["items_per_s"] / batch1, 3) if batch1 else None,
    }


def bench_models(
    config: FacegraphConfig, pictures: Sequence[Picture], budget: Budget, progress: bool = True
) -> tuple[dict, dict[str, LoadedModel]]:
    """Per-model results, and the loaded models (the picture check reuses the detector)."""
    images = [p.rgb() for p in pictures]
    loaded = {name: load_stage(config, name) for name in stages_of(config)}
    results = {"detector": bench_one("detector", loaded["detector"], images, budget, progress)}
    for name in ("recognizer", "deepfake"):
        if name in loaded:
            crops = face_crops(loaded["detector"], images, pictures, loaded[name].adapter.crop_spec)
            results[name] = bench_one(name, loaded[name], crops, budget, progress)
    return results, loaded

