"""The whole job: convert, measure against fp32, hold the floors, install the variant and its manifest."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from facegraph.models.errors import ModelLoadError
from facegraph.models.pack.build import sha256_of
from facegraph.models.registry import LoadedModel, ModelSpec, load_model
from facegraph.models.optimize.conversion import check_four_bit, convert
from facegraph.models.optimize.floors import AccuracyFloorError, DESCRIPTIONS, EMBED_CHUNK, FOUR_BIT_METHODS, METHODS, OptimizeError, TIMING_ROUNDS, TIMING_THREADS, floors_for
from facegraph.models.optimize.layouts import Layout, resolve
from facegraph.models.optimize.measurement import calibration_feeds, compare, recording, run_role, samples_for, time_sessions

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the whole job


@dataclass(frozen=True)
class OptimizeResult:
    """A measured variant: the manifest written (or that would have been), and whether it was kept."""

    manifest: dict
    manifest_path: Path
    files: dict[str, Path]
    failures: tuple[str, ...]
    written: bool


def _file_entry(path: Path) -> dict:
    return {"path": str(path), "sha256": sha256_of(path), "bytes": path.stat().st_size}


def _load(spec: ModelSpec, cache_dir: Path | None) -> tuple[LoadedModel, float]:
    started = time.perf_counter()
    loaded = load_model(spec, cpu_threads=TIMING_THREADS, cache_dir=cache_dir)
    return loaded, (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class _Measured:
    """How the variant compares with fp32 on the same inputs: the accuracy differences and the timed speed."""

    accuracy: dict
    fp32_ms: float
    variant_ms: float
    timed_on: str


def optimize(
    model: str,
    method: str,
    cache_dir: Path,
    family: str | None = None,
    out: Path | None = None,
    force: bool = False,
    calibration_limit: int | None = 128,
    rounds: int = TIMING_ROUNDS,
    progress: bool = False,
) -> OptimizeResult:
    """Make ``method``'s variant of ``model``, measure it against fp32, and keep it if it holds its floors.

    Args:
        model: a default-pack name (``centerface``, ``blazeface``, ``mtcnn``, ``dlib-resnet``) or a path to an ONNX file,
            a Hugging Face export folder, or a folder of a multi-file family's files.
        method: one of :data:`METHODS`.
        cache_dir: the model cache (the pack, and the MTCNN that finds faces for measuring).
        family: the model family; needed for paths.
        out: a folder for the variant instead of beside its source.
        force: keep a variant that falls outside its floor.
        calibration_limit: at most this many calibration batches per file (``int8-static``).
        rounds: timed rounds for the speed ratio.
        progress: show a progress bar while calibrating.

    Raises:
        OptimizeError: the model or method cannot be handled (nothing written).
        AccuracyFloorError: the variant falls outside its floor and ``force`` is off (nothing written).
    """
    if method not in METHODS:
        raise OptimizeError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    layout = resolve(model, method, cache_dir, family, out)
    if method in FOUR_BIT_METHODS:
        check_four_bit(method, layout.fp32)
    reference, reference_load_ms = _load(layout.fp32_spec, layout.cache_dir)
    role = reference.adapter.role
    feeds = calibration_feeds(reference, layout.cache_dir, calibration_limit) if method == "int8-static" else {}
    with tempfile.TemporaryDirectory(prefix="facegraph-optimize-") as tmp:
        stage = Path(tmp) / "stage"
        settings = _stage_variant(layout, method, stage, Path(tmp) / "work", feeds, progress)
        variant, variant_load_ms = _load_variant(layout, method, stage)
        measured = _measure(reference, variant, layout.cache_dir, rounds)
        checks, failures = _check_floors(role, method, measured.accuracy)
        performance = _performance(layout, stage, measured, rounds, reference_load_ms, variant_load_ms)
        manifest = _manifest(layout, method, role, stage, settings, measured.accuracy, checks, failures, force, performance)
        result = OptimizeResult(manifest, layout.manifest, dict(layout.final), tuple(failures), written=not failures or force)
        if failures and not force:
            raise AccuracyFloorError(f"{layout.source} {method} refused, nothing written: " + "; ".join(failures) + " (--force keeps it anyway)", result)
        _install_variant(layout, stage, manifest)
    logger.info("%s %s written to %s", layout.source, method, ", ".join(str(p) for p in layout.final.values()))
    return result


def _stage_variant(
    layout: Layout, method: str, stage: Path, work: Path, feeds: dict[str, list[dict[str, np.ndarray]]], progress: bool
) -> dict[str, Any]:
    """Convert every fp32 file under ``stage`` with its extras beside it, laid out so the variant loads from there.

    Returns:
        The conversion settings per file, for the manifest.
    """
    work.mkdir(parents=True)
    settings: dict[str, Any] = {}
    for name, src in layout.fp32.items():
        dst = stage / layout.staged[name]
        dst.parent.mkdir(parents=True, exist_ok=True)
        settings[name] = convert(method, src, dst, work, feeds.get(name, []), f"{layout.source} {name}", progress)
    for src, staged, _ in layout.extras:
        (stage / staged).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, stage / staged)
    return settings


def _load_variant(layout: Layout, method: str, stage: Path) -> tuple[LoadedModel, float]:
    """Load the staged variant; a variant that does not load is the method's failure, not the model's."""
    spec, variant_cache = layout.stage_spec(stage)
    try:
        return _load(spec, variant_cache)
    except ModelLoadError as exc:
        raise OptimizeError(f"the {method} variant does not load: {exc.message}") from exc


def _measure(reference: LoadedModel, variant: LoadedModel, cache_dir: Path | None, rounds: int) -> _Measured:
    """Run both models on the measurement samples, then time both on what fp32 is fed for the first of them.

    Detectors are timed on the first measurement picture, the others on one chunk of face crops,
    so the speed ratio is taken on a realistic single call.
    """
    role = reference.adapter.role
    samples = samples_for(reference, "measurement", cache_dir)
    accuracy = compare(reference, samples, run_role(reference.adapter, samples), run_role(variant.adapter, samples))
    with recording(reference.adapter) as timing_feeds:
        run_role(reference.adapter, samples[: 1 if role == "detector" else EMBED_CHUNK])
    fp32_ms, variant_ms = time_sessions(reference.adapter.sessions, variant.adapter.sessions, timing_feeds, rounds)
    timed_on = "the first measurement picture" if role == "detector" else f"a batch of {min(EMBED_CHUNK, len(samples))} face crops"
    return _Measured(accuracy, fp32_ms, variant_ms, timed_on)


def _check_floors(role: str, method: str, accuracy: dict) -> tuple[dict[str, dict], list[str]]:
    """Hold each of the role's accuracy floors for ``method``.

    Returns:
        Each floor's bound, limit, value and verdict by metric, and a sentence per floor that fails.
    """
    checks = {}
    failures = []
    for floor in floors_for(role):
        value = accuracy.get(floor.metric)
        ok = floor.holds(value, method)
        checks[floor.metric] = {"bound": floor.bound, "limit": floor.limits[method], "value": value, "ok": ok}
        if not ok:
            word = "at least" if floor.bound == "min" else "at most"
            failures.append(f"{floor.metric} = {value} but the {role} floor for {method} is {word} {floor.limits[method]}")
    return checks, failures


def _performance(layout: Layout, stage: Path, measured: _Measured, rounds: int, fp32_load_ms: float, variant_load_ms: float) -> dict:
    """What the variant costs beside fp32: bytes on disk, time per call and time to load."""
    fp32_bytes = sum(p.stat().st_size for p in layout.fp32.values())
    variant_bytes = sum((stage / p).stat().st_size for p in layout.staged.values())
    return {
        "fp32_bytes": fp32_bytes,
        "variant_bytes": variant_bytes,
        "size_ratio": round(variant_bytes / fp32_bytes, 4),
        "fp32_ms": round(measured.fp32_ms, 3),
        "variant_ms": round(measured.variant_ms, 3),
        "speedup": round(measured.fp32_ms / measured.variant_ms, 3) if measured.variant_ms > 0 else None,
        "timed_on": measured.timed_on,
        "rounds": rounds,
        "intra_op_threads": TIMING_THREADS,
        "fp32_load_ms": round(fp32_load_ms, 1),
        "variant_load_ms": round(variant_load_ms, 1),
    }


def _manifest(
    layout: Layout,
    method: str,
    role: str,
    stage: Path,
    settings: dict[str, Any],
    accuracy: dict,
    checks: dict[str, dict],
    failures: list[str],
    force: bool,
    performance: dict,
) -> dict:
    """The manifest kept beside the variant: where it came from, how it was made, and what it measured.

    File hashes are of the staged files, but their paths are where they will be installed.
    """
    return {
        "model": layout.source,
        "family": layout.family,
        "role": role,
        "variant": method,
        "method": DESCRIPTIONS[method],
        "settings": settings,
        "source_files": {name: _file_entry(p) for name, p in layout.fp32.items()},
        "files": {name: {**_file_entry(stage / layout.staged[name]), "path": str(layout.final[name])} for name in layout.fp32},
        "accuracy": accuracy,
        "floors": checks,
        "within_floors": not failures,
        "forced": bool(failures) and force,
        "performance": performance,
        "onnxruntime": ort.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _install_variant(layout: Layout, stage: Path, manifest: dict) -> None:
    """Copy the accepted variant and its extras from ``stage`` into place, then write its manifest last."""
    for name, staged in layout.staged.items():
        _install(stage / staged, layout.final[name])
    for src, staged, final in layout.extras:
        if final.resolve() != src.resolve():
            _install(stage / staged, final)
    layout.manifest.parent.mkdir(parents=True, exist_ok=True)
    layout.manifest.write_text(json.dumps(manifest, indent=2))


def _install(staged: Path, final: Path) -> None:
    """Copy a staged file into place atomically (a reader never sees half a model)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    shutil.copyfile(staged, tmp)
    tmp.replace(final)
