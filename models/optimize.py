"""Optimised variants of a model, each measured against its fp32 source before it is kept.

Methods (``--to``):

* ``fp16``: every float tensor to half precision with ``onnxconverter-common``; inputs
  and outputs stay float32 (``keep_io_types``).
* ``int8``: dynamic int8 (``onnxruntime.quantization.quantize_dynamic``): int8 weights,
  activations quantised at run time.
* ``int8-static``: static int8 in QDQ format, per-channel weights, activation ranges
  calibrated on real inputs: face crops our own MTCNN cuts from scikit-image's
  pictures (astronaut, camera man, 60 faces of ``lfw_subset``) with flips, brightness
  changes and small rotations; detectors are calibrated on the inputs they really get
  from those pictures (for MTCNN, every pyramid level and every R-Net/O-Net candidate).
* ``q4``: 4-bit weight-only MatMul (``MatMulNBits``); only for models whose weights sit
  mostly in large MatMuls (transformers), refused otherwise.
* ``ort``: the graph as ONNX Runtime optimises it for the CPU provider, saved offline.

Every variant runs beside its source on the same inputs and the differences go into
a manifest next to the variant: boxes and scores for detectors, embeddings and
same/different decisions on picture pairs for recognizers, probabilities for
classifiers, plus file size and CPU speed measured in the same run. A variant that
falls outside its role's floor (:data:`FLOORS`) is refused and nothing is written,
unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from models.base import Adapter
from models.embedding import Metric, distances, is_match, similarities
from models.errors import FacegraphError, ModelLoadError
from models.geometry import crop_face, iou
from models.image_classifier import locate_hf_model
from models.pack.build import pack_models, sha256_of
from models.registry import LoadedModel, ModelSpec, family_class, load_model, pack_file, variant_manifest
from models.types import Face

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("fp16", "int8", "int8-static", "q4", "ort")
DESCRIPTIONS = {
    "fp16": "float16 weights and activations, float32 inputs/outputs (onnxconverter-common)",
    "int8": "dynamic int8: int8 weights, activations quantised at run time (onnxruntime quantize_dynamic)",
    "int8-static": "static int8, QDQ, per-channel weights, calibrated activations (onnxruntime quantize_static)",
    "q4": "4-bit weight-only MatMul, blocks of 32 (onnxruntime MatMulNBits)",
    "ort": "graph optimised offline by ONNX Runtime for the CPU provider (extended level)",
}


@dataclass(frozen=True)
class Floor:
    """The least accuracy a variant must keep: ``metric`` at least (``min``) or at most (``max``) ``limits[method]``."""

    role: str
    metric: str
    bound: Literal["min", "max"]
    limits: dict[str, float]

    def holds(self, value: float | None, method: str) -> bool:
        if value is None:
            return False
        limit = self.limits[method]
        return value >= limit if self.bound == "min" else value <= limit


def _by_method(fp16: float, int8: float, q4: float, ort_: float) -> dict[str, float]:
    return {"fp16": fp16, "int8": int8, "int8-static": int8, "q4": q4, "ort": ort_}


# The one table of floors. Detectors: mean IoU of matched boxes (a face found by one
# model only counts 0). Recognizers: the worst cosine between a crop's fp32 and variant
# embeddings, and how many same/different decisions on picture pairs flip.
# Classifiers: the largest change of a face's fake probability. ``ort`` only reorders
# floating-point arithmetic, so it must be near exact.
FLOORS: tuple[Floor, ...] = (
    Floor("detector", "mean_box_iou", "min", _by_method(fp16=0.9, int8=0.9, q4=0.9, ort_=0.99)),
    Floor("recognizer", "min_embedding_cosine", "min", _by_method(fp16=0.999, int8=0.99, q4=0.99, ort_=0.9999)),
    Floor("recognizer", "decision_changes", "max", _by_method(fp16=0, int8=0, q4=0, ort_=0)),
    Floor("classifier", "max_probability_change", "max", _by_method(fp16=0.05, int8=0.05, q4=0.05, ort_=0.001)),
)

# Speed: intra-op threads for both sessions, and timed rounds after one warm-up.
TIMING_THREADS = 1
TIMING_ROUNDS = 5
EMBED_CHUNK = 8
# q4 only pays where MatMul weights are most of the model: each must have at least this
# many elements and together they must hold this share of all weights.
Q4_MIN_ELEMENTS = 1 << 16
Q4_MIN_SHARE = 0.5
Q4_BLOCK_SIZE = 32


class OptimizeError(FacegraphError):
    """A variant cannot be made for this model (unknown model, unsupported method, nothing to quantise)."""

    code = "optimize_error"


class AccuracyFloorError(OptimizeError):
    """The variant was made and measured, but falls outside its floor; nothing was written."""

    code = "accuracy_floor"

    def __init__(self, message: str, result: "OptimizeResult"):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Picture:
    """An RGB uint8 (H, W, 3) picture; ``identity`` names the person when known (for pair labels)."""

    name: str
    image: np.ndarray = field(repr=False)
    identity: str | None


@lru_cache(maxsize=None)
def _skimage(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    image.setflags(write=False)
    return image


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """``lfw_subset``'s 100 faces (25x25 grey), enlarged to 100 px on a 160 px RGB canvas so MTCNN finds them."""
    from skimage import data

    grey = (data.lfw_subset()[:100] * 255.0).round().clip(0, 255).astype(np.uint8)
    out = []
    for face in grey:
        big = np.pad(cv2.resize(face, (100, 100), interpolation=cv2.INTER_CUBIC), 30, mode="edge")
        out.append(np.repeat(big[:, :, None], 3, axis=2))
    faces = np.stack(out)
    faces.setflags(write=False)
    return faces


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def measurement_pictures() -> list[Picture]:
    """What variants are compared on: the astronaut moved about (one person), the camera man,
    20 ``lfw_subset`` faces not used for calibration, and a picture without a face."""
    astronaut = _skimage("astronaut")
    height, width = astronaut.shape[:2]
    shifted = cv2.warpAffine(astronaut, np.array([[1.0, 0, 61], [0, 1.0, 37]]), (width + 90, height + 50), borderValue=(90, 90, 90))
    moved = {
        "astronaut": astronaut,
        "astronaut_shifted": shifted,
        "astronaut_scaled_0.7": cv2.resize(astronaut, (round(width * 0.7), round(height * 0.7)), interpolation=cv2.INTER_AREA),
        "astronaut_scaled_1.4": cv2.resize(astronaut, (round(width * 1.4), round(height * 1.4)), interpolation=cv2.INTER_LINEAR),
        "astronaut_rotated_+8": _rotate(astronaut, 8),
        "astronaut_rotated_-8": _rotate(astronaut, -8),
        "astronaut_jpeg_40": _jpeg(astronaut, 40),
    }
    pictures = [Picture(name, image, "astronaut") for name, image in moved.items()]
    pictures.append(Picture("camera", _skimage("camera"), "camera"))
    pictures += [Picture(f"lfw_{i}", face, None) for i, face in enumerate(_lfw_faces()[80:100], start=80)]
    pictures.append(Picture("coffee", _skimage("coffee"), None))
    return pictures


_AUGMENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "plain": lambda im: im,
    "flip": lambda im: np.ascontiguousarray(im[:, ::-1]),
    "dark": lambda im: (im.astype(np.float32) * 0.7).astype(np.uint8),
    "bright": lambda im: np.clip(im.astype(np.float32) * 1.25 + 10, 0, 255).astype(np.uint8),
    "rotated_+10": lambda im: _rotate(im, 10),
    "rotated_-10": lambda im: _rotate(im, -10),
}


def calibration_pictures() -> list[Picture]:
    """What static int8 is calibrated on: astronaut and camera man under every augmentation,
    and ``lfw_subset`` faces 0-59 under one augmentation each (none of the measured faces)."""
    pictures = []
    for name in ("astronaut", "camera"):
        pictures += [Picture(f"{name}_{aug}", fn(_skimage(name)), name) for aug, fn in _AUGMENTATIONS.items()]
    names = list(_AUGMENTATIONS)
    for i, face in enumerate(_lfw_faces()[:60]):
        aug = names[i % len(names)]
        pictures.append(Picture(f"lfw_{i}_{aug}", _AUGMENTATIONS[aug](face), None))
    return pictures


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list."""
    if limit is None or len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]


# --------------------------------------------------------------------------- sources and layout


@dataclass(frozen=True)
class Layout:
    """Where a model's fp32 files are, and where its variant goes.

    Variant files are first written under a staging folder at ``staged[name]`` (relative),
    laid out so that ``stage_spec`` loads them; once accepted they are copied to ``final``.
    """

    family: str
    source: str
    fp32: dict[str, Path]
    staged: dict[str, Path]
    final: dict[str, Path]
    # Files the variant needs beside it to load (sidecar JSON, HF configs): (source, staged, final);
    # staged always, copied to ``final`` unless that is the source itself.
    extras: tuple[tuple[Path, Path, Path], ...]
    manifest: Path
    stage_spec: Callable[[Path], tuple[ModelSpec, Path | None]]
    fp32_spec: ModelSpec
    cache_dir: Path | None


def _pack_layout(name: str, family: str, variant: str, cache_dir: Path, out: Path | None) -> Layout:
    cls = family_class(family)
    fp32 = {f: pack_file(cache_dir, name, f, "fp32") for f in cls.files}
    absent = [str(p) for p in fp32.values() if not p.is_file()]
    if absent:
        raise OptimizeError(f"default pack model '{name}' is not built (missing {', '.join(absent)}): run `facegraph models build`")
    staged = {f: pack_file(Path(), name, f, variant) for f in cls.files}
    final = {f: (out / p.name if out else cache_dir / p) for f, p in staged.items()}
    return Layout(
        family=family,
        source=f"pack:{name}",
        fp32=fp32,
        staged=staged,
        final=final,
        extras=(),
        manifest=variant_manifest(final[cls.files[0]]),
        stage_spec=lambda root: (ModelSpec(family=family, pack=name, variant=variant, device="cpu"), root),
        fp32_spec=ModelSpec(family=family, pack=name, device="cpu"),
        cache_dir=cache_dir,
    )


def _path_layout(path: Path, family: str, variant: str, cache_dir: Path, out: Path | None) -> Layout:
    cls = family_class(family)
    fp32_spec = ModelSpec(family=family, path=str(path), device="cpu")
    if path.is_file():
        if len(cls.files) != 1:
            raise OptimizeError(f"family '{family}' needs a folder with {', '.join(f + '.onnx' for f in cls.files)}")
        root = out or path.parent
        stem = path.name.removesuffix(".onnx")
        staged = {"model": Path(f"{stem}.{variant}.onnx")}
        # The classifier's preprocessing sidecar, renamed so the variant file finds it too.
        sidecar = next((p for p in (path.with_suffix(".json"), path.parent / "facegraph.json") if p.is_file()), None)
        extras = ((sidecar, Path(f"{stem}.{variant}.json"), root / f"{stem}.{variant}.json"),) if sidecar else ()
        return Layout(
            family=family,
            source=str(path),
            fp32={"model": path},
            staged=staged,
            final={"model": root / staged["model"]},
            extras=extras,
            manifest=variant_manifest(root / staged["model"]),
            stage_spec=lambda stage: (ModelSpec(family=family, path=str(stage / staged["model"]), device="cpu"), cache_dir),
            fp32_spec=fp32_spec,
            cache_dir=cache_dir,
        )
    if not path.is_dir():
        raise OptimizeError(f"model not found: '{path}' is neither a default pack model ({', '.join(m.name for m in pack_models())}) nor a file or folder")
    if len(cls.files) == 1:
        # A Hugging Face export: the variant is onnx/model_<variant>.onnx, picked by `variant`.
        try:
            model = locate_hf_model(path, "fp32")
        except ModelLoadError as exc:
            raise OptimizeError(exc.message) from None
        root = out or path
        staged = {"model": model.parent.relative_to(path) / f"model_{variant}.onnx"}
        configs = [p for p in (path / "config.json", path / "preprocessor_config.json", model.parent / "facegraph.json") if p.is_file()]
        extras = tuple((p, p.relative_to(path), root / p.relative_to(path)) for p in configs)
        return Layout(
            family=family,
            source=str(path),
            fp32={"model": model},
            staged=staged,
            final={"model": root / staged["model"]},
            extras=extras,
            manifest=variant_manifest(root / staged["model"]),
            stage_spec=lambda stage: (ModelSpec(family=family, path=str(stage), variant=variant, device="cpu"), cache_dir),
            fp32_spec=fp32_spec,
            cache_dir=cache_dir,
        )
    # A folder of several files (pnet.onnx, ...): the variant is a folder of the same names.
    root = out or path / variant
    staged = {f: Path(f"{f}.onnx") for f in cls.files}
    return Layout(
        family=family,
        source=str(path),
        fp32={f: path / f"{f}.onnx" for f in cls.files},
        staged=staged,
        final={f: root / p for f, p in staged.items()},
        extras=(),
        manifest=variant_manifest(root / staged[cls.files[0]]),
        stage_spec=lambda stage: (ModelSpec(family=family, path=str(stage), device="cpu"), cache_dir),
        fp32_spec=fp32_spec,
        cache_dir=cache_dir,
    )


def resolve(model: str, variant: str, cache_dir: Path, family: str | None = None, out: Path | None = None) -> Layout:
    """The layout for a default-pack name or a path (with its family)."""
    packs = {m.name: m for m in pack_models()}
    if model in packs and not Path(model).exists():
        pack = packs[model]
        if family not in (None, pack.family):
            raise OptimizeError(f"default pack model '{model}' is family '{pack.family}', not '{family}'")
        return _pack_layout(model, pack.family, variant, cache_dir, out)
    if family is None:
        raise OptimizeError(f"'{model}' is not a default pack model ({', '.join(packs)}): give its family with --family")
    try:
        family_class(family)
    except ModelLoadError as exc:
        raise OptimizeError(exc.message) from None
    return _path_layout(Path(model).expanduser(), family, variant, cache_dir, out)


# --------------------------------------------------------------------------- converters


class _Feeds(CalibrationDataReader):
    """Recorded session inputs handed to the calibrator, with a progress bar."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], label: str, progress: bool):
        from tqdm import tqdm

        self._feeds = iter(feeds)
        self._bar = tqdm(total=len(feeds), desc=f"calibrating {label}", unit="batch", disable=not progress, leave=False)

    def get_next(self):
        feed = next(self._feeds, None)
        if feed is None:
            self._bar.close()
        else:
            self._bar.update()
        return feed


def fp16_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The float16 variant (float32 inputs and outputs kept), and how many weights were clamped into float16's range."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    # The converter warns once per weight it clamps into float16's range.
    return half, sum("truncated" in str(w.message) for w in caught)


def _to_fp16(src: Path, dst: Path) -> dict:
    model, clamped = fp16_model(onnx.load(src))
    onnx.save(model, dst)
    return {"keep_io_types": True, "values_clamped_to_fp16_range": clamped}


def _preprocessed(src: Path, work: Path) -> Path:
    """ONNX Runtime's recommended pre-quantisation pass (shape inference, constant folding)."""
    from onnxruntime.quantization import quant_pre_process

    out = work / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def _to_int8(src: Path, dst: Path, work: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(_preprocessed(src, work), dst, weight_type=QuantType.QInt8, per_channel=False)
    return {"weight_type": "QInt8", "per_channel": False, "op_types": "onnxruntime default (Conv, MatMul, Gemm, ...)"}


def _to_int8_static(src: Path, dst: Path, work: Path, feeds: list[dict[str, np.ndarray]], label: str, progress: bool) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise OptimizeError(f"no calibration inputs reached {label}: the calibration pictures gave it nothing to see")
    quantize_static(
        _preprocessed(src, work),
        dst,
        _Feeds(feeds, label, progress),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "format": "QDQ",
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "per_channel": True,
        "calibration_method": "MinMax",
        "calibration_batches": len(feeds),
        "calibration_samples": int(sum(next(iter(f.values())).shape[0] for f in feeds)),
    }


def large_matmuls(model: onnx.ModelProto) -> tuple[list[str], dict]:
    """Names of MatMuls with a constant weight of at least ``Q4_MIN_ELEMENTS``, and a summary of the model's weights."""
    weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    total = sum(weights.values())
    shapes = {t.name: "x".join(str(d) for d in t.dims) for t in model.graph.initializer}
    matmuls = [(n.name or n.output[0], weights.get(n.input[1], 0)) for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2]
    large = [(name, size) for name, size in matmuls if size >= Q4_MIN_ELEMENTS]
    summary = {
        "weights": total,
        "matmul_weight_shapes": [shapes[n.input[1]] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in shapes],
        "large_matmuls": len(large),
        "large_matmul_weight_share": round(sum(s for _, s in large) / total, 4) if total else 0.0,
        "gemm_nodes": sum(1 for n in model.graph.node if n.op_type == "Gemm"),
    }
    return [name for name, _ in large], summary


def check_q4(files: dict[str, Path]) -> dict[str, dict]:
    """Per file, what 4-bit MatMul quantisation would touch; raises OptimizeError when it would not pay."""
    summaries = {name: large_matmuls(onnx.load(path, load_external_data=False))[1] for name, path in files.items()}
    weights = sum(s["weights"] for s in summaries.values())
    share = sum(s["large_matmul_weight_share"] * s["weights"] for s in summaries.values()) / max(weights, 1)
    if share < Q4_MIN_SHARE:
        found = "; ".join(
            f"{name}: {s['weights']:,} weights, MatMul weights {', '.join(s['matmul_weight_shapes']) or 'none'}, "
            f"{s['gemm_nodes']} Gemm"
            for name, s in summaries.items()
        )
        raise OptimizeError(
            f"q4 refused: 4-bit weight-only quantisation (MatMulNBits) rewrites only MatMuls with constant weights of at least "
            f"{Q4_MIN_ELEMENTS:,} elements, and those hold {share:.1%} of this model's weights (q4 needs {Q4_MIN_SHARE:.0%} to pay). "
            f"Found {found}. Convolutions and Gemm are left as they are by q4: use int8-static or fp16 instead."
        )
    return summaries


def _to_q4(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(src)
    names, summary = large_matmuls(model)
    every = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name and n.name not in names]
    quantizer = MatMulNBitsQuantizer(model, block_size=Q4_BLOCK_SIZE, is_symmetric=True, nodes_to_exclude=every)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"block_size": Q4_BLOCK_SIZE, "symmetric": True, "quantized_matmuls": len(names), **summary}


def _to_ort(src: Path, dst: Path) -> dict:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return {"graph_optimization_level": "ORT_ENABLE_EXTENDED", "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__}


def convert(method: str, src: Path, dst: Path, work: Path, feeds: list[dict[str, np.ndarray]], label: str, progress: bool) -> dict:
    """Write ``src`` as ``method`` to ``dst``; returns the settings used."""
    if method == "fp16":
        return _to_fp16(src, dst)
    if method == "int8":
        return _to_int8(src, dst, work)
    if method == "int8-static":
        return _to_int8_static(src, dst, work, feeds, label, progress)
    if method == "q4":
        return _to_q4(src, dst)
    if method == "ort":
        return _to_ort(src, dst)
    raise OptimizeError(f"unknown method '{method}'; known: {', '.join(METHODS)}")


# --------------------------------------------------------------------------- running and recording


class _Recorder:
    """A session stand-in that keeps a copy of every input feed and runs the real session."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, output_names, input_feed):
        self.feeds.append({k: np.array(v, copy=True) for k, v in input_feed.items()})
        return self.session.run(output_names, input_feed)


@contextlib.contextmanager
def recording(adapter: Adapter) -> Iterator[dict[str, list[dict[str, np.ndarray]]]]:
    """Within the block, every input the adapter feeds its sessions is kept, per file name."""
    real = dict(adapter.sessions)
    recorders = {name: _Recorder(session) for name, session in real.items()}
    feeds: dict[str, list[dict[str, np.ndarray]]] = {name: r.feeds for name, r in recorders.items()}
    adapter.sessions.update(recorders)
    try:
        yield feeds
    finally:
        adapter.sessions.update(real)


@dataclass(frozen=True)
class Sample:
    """One measurement input: a picture (detectors) or a face crop (recognizers, classifiers)."""

    name: str
    data: np.ndarray = field(repr=False)
    identity: str | None


def run_role(adapter: Adapter, samples: Sequence[Sample]) -> list:
    """The adapter's answers: faces per picture, embedding rows, or fake probabilities."""
    if adapter.role == "detector":
        return [adapter.detect([s.data])[0] for s in samples]
    out: list = []
    for start in range(0, len(samples), EMBED_CHUNK):
        chunk = [s.data for s in samples[start : start + EMBED_CHUNK]]
        if adapter.role == "recognizer":
            out += list(adapter.embed(chunk))
        else:
            out += [c.fake_probability for c in adapter.classify(chunk)]
    return out


@lru_cache(maxsize=4)
def _faces(cache_dir: str, pnet_sha: str, which: str) -> tuple[tuple[Picture, tuple[Face, ...]], ...]:
    """The default pack's fp32 MTCNN over the measurement or calibration pictures (cached per pack build)."""
    detector = load_model(ModelSpec(family="mtcnn", pack="mtcnn", device="cpu"), cpu_threads=TIMING_THREADS, cache_dir=Path(cache_dir)).adapter
    pictures = measurement_pictures() if which == "measurement" else calibration_pictures()
    return tuple((p, tuple(detector.detect([p.image])[0])) for p in pictures)


def face_crops(cache_dir: Path | None, spec, which: Literal["measurement", "calibration"]) -> list[Sample]:
    """Crops cut by ``spec`` around every face our MTCNN finds in the pictures."""
    if cache_dir is None or not pack_file(cache_dir, "mtcnn", "pnet", "fp32").is_file():
        raise OptimizeError("measuring a recognizer or classifier needs the default pack's MTCNN to find faces: run `facegraph models build`")
    pnet = pack_file(cache_dir, "mtcnn", "pnet", "fp32")
    samples = []
    for picture, faces in _faces(str(cache_dir), sha256_of(pnet), which):
        for k, face in enumerate(faces):
            samples.append(Sample(f"{picture.name}#{k}", crop_face(picture.image, face, spec), picture.identity))
    return samples


def samples_for(loaded: LoadedModel, which: Literal["measurement", "calibration"], cache_dir: Path | None) -> list[Sample]:
    adapter = loaded.adapter
    if adapter.role == "detector":
        pictures = measurement_pictures() if which == "measurement" else calibration_pictures()
        return [Sample(p.name, p.image, p.identity) for p in pictures]
    return face_crops(cache_dir, adapter.crop_spec, which)


def calibration_feeds(loaded: LoadedModel, cache_dir: Path | None, limit: int | None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per file, the inputs the fp32 model really gets on the calibration pictures (at most ``limit`` per file)."""
    samples = samples_for(loaded, "calibration", cache_dir)
    with recording(loaded.adapter) as feeds:
        run_role(loaded.adapter, samples)
    return {name: _spread(list(f), limit) for name, f in feeds.items()}


# --------------------------------------------------------------------------- comparing


def _match(a: Sequence[Face], b: Sequence[Face]) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two face lists by box IoU, best pairs first."""
    if not a or not b:
        return []
    overlaps = iou(np.array([f.bbox for f in a]), np.array([f.bbox for f in b]))
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-overlaps, axis=None):
        i, j = np.unravel_index(flat, overlaps.shape)
        if overlaps[i, j] <= 0:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j), float(overlaps[i, j])))
    return pairs


def compare_detections(reference: list[list[Face]], variant: list[list[Face]]) -> dict:
    """Box IoU, score and landmark changes of matched faces; unmatched faces count IoU 0."""
    ious, scores, shifts, unmatched = [], [], [], 0
    for a, b in zip(reference, variant):
        pairs = _match(a, b)
        unmatched += len(a) + len(b) - 2 * len(pairs)
        for i, j, overlap in pairs:
            ious.append(overlap)
            scores.append(abs(a[i].score - b[j].score))
            if a[i].landmarks is not None and b[j].landmarks is not None:
                shifts.append(float(np.abs(np.asarray(a[i].landmarks) - np.asarray(b[j].landmarks)).max()))
    count = len(ious) + unmatched
    return {
        "pictures": len(reference),
        "faces_fp32": sum(len(a) for a in reference),
        "faces_variant": sum(len(b) for b in variant),
        "unmatched_faces": unmatched,
        "mean_box_iou": round(float(sum(ious) / count), 5) if count else None,
        "min_box_iou": round(float(min(ious + [0.0] * unmatched)), 5) if count else None,
        "max_score_change": round(float(max(scores)), 6) if scores else None,
        "max_landmark_shift_px": round(float(max(shifts)), 3) if shifts else None,
    }


def _pair_distances(embeddings: np.ndarray, metric: Metric, pairs: list[tuple[int, int]]) -> np.ndarray:
    return distances(embeddings[[i for i, _ in pairs]], embeddings[[j for _, j in pairs]], metric)


def compare_embeddings(samples: Sequence[Sample], reference: np.ndarray, variant: np.ndarray, metric: Metric, threshold: float) -> dict:
    """Per-crop embedding agreement, and same/different decisions on pairs of crops.

    The test pairs are those whose crops both name a person: the astronaut moved about
    (same) and the astronaut against the camera man (different); ``decision_changes``
    counts how many of them the variant decides otherwise than fp32. Pairs of
    ``lfw_subset`` faces (people unknown, many near the threshold) show how often a
    borderline decision flips: ``borderline_decision_changes``, reported, not floored.
    """
    cosine = similarities(reference, variant)
    result: dict[str, Any] = {
        "crops": len(samples),
        "min_embedding_cosine": round(float(cosine.min()), 6) if len(samples) else None,
        "mean_embedding_cosine": round(float(cosine.mean()), 6) if len(samples) else None,
        "max_embedding_distance": round(float(np.linalg.norm(reference - variant, axis=1).max()), 6) if len(samples) else None,
        "metric": metric,
        "threshold": threshold,
    }
    known = [i for i, s in enumerate(samples) if s.identity is not None]
    unknown = [i for i, s in enumerate(samples) if s.identity is None]
    groups = {
        "": [(i, j) for n, i in enumerate(known) for j in known[n + 1 :]],
        "borderline_": [(i, j) for n, i in enumerate(unknown) for j in unknown[n + 1 :]],
    }
    for prefix, pairs in groups.items():
        result[f"{prefix}pairs"] = len(pairs)
        result[f"{prefix}decision_changes"] = 0
        if not pairs:
            continue
        before, after = _pair_distances(reference, metric, pairs), _pair_distances(variant, metric, pairs)
        same_before, same_after = is_match(before, metric, threshold), is_match(after, metric, threshold)
        result[f"{prefix}decision_changes"] = int((same_before != same_after).sum())
        result[f"{prefix}max_pair_score_change"] = round(float(np.abs(after - before).max()), 6)
        if not prefix:
            truth = np.array([samples[i].identity == samples[j].identity for i, j in pairs])
            result["correct_fp32"] = int((same_before == truth).sum())
            result["correct_variant"] = int((same_after == truth).sum())
    return result


def compare_probabilities(reference: Sequence[float], variant: Sequence[float]) -> dict:
    a, b = np.asarray(reference, np.float64), np.asarray(variant, np.float64)
    change = np.abs(a - b)
    return {
        "crops": len(a),
        "max_probability_change": round(float(change.max()), 6) if len(a) else None,
        "mean_probability_change": round(float(change.mean()), 6) if len(a) else None,
        "label_changes": int(((a >= 0.5) != (b >= 0.5)).sum()),
    }


def compare(loaded: LoadedModel, samples: Sequence[Sample], reference: list, variant: list) -> dict:
    adapter = loaded.adapter
    if adapter.role == "detector":
        return compare_detections(reference, variant)
    if adapter.role == "recognizer":
        ref, var = np.array(reference, np.float32).reshape(len(samples), -1), np.array(variant, np.float32).reshape(len(samples), -1)
        return compare_embeddings(samples, ref, var, adapter.metric, adapter.match_threshold)
    return compare_probabilities(reference, variant)


def time_sessions(first: dict, second: dict, feeds: dict[str, list[dict[str, np.ndarray]]], rounds: int) -> tuple[float, float]:
    """Median milliseconds per round (every feed of every file once) of two session sets, interleaved."""

    def one(sessions: dict) -> float:
        started = time.perf_counter()
        for name, items in feeds.items():
            for feed in items:
                sessions[name].run(None, feed)
        return (time.perf_counter() - started) * 1000

    one(first), one(second)  # warm-up: first runs allocate
    a, b = [], []
    for _ in range(max(1, rounds)):
        a.append(one(first))
        b.append(one(second))
    return statistics.median(a), statistics.median(b)


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


def floors_for(role: str) -> list[Floor]:
    return [f for f in FLOORS if f.role == role]


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
        model: a default-pack name (``blazeface``, ``mtcnn``, ``dlib-resnet``) or a path to an ONNX file,
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
    if method == "q4":
        check_q4(layout.fp32)
    reference, reference_load_ms = _load(layout.fp32_spec, layout.cache_dir)
    role = reference.adapter.role
    feeds = calibration_feeds(reference, layout.cache_dir, calibration_limit) if method == "int8-static" else {}
    settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facegraph-optimize-") as tmp:
        stage, work = Path(tmp) / "stage", Path(tmp) / "work"
        work.mkdir(parents=True)
        for name, src in layout.fp32.items():
            dst = stage / layout.staged[name]
            dst.parent.mkdir(parents=True, exist_ok=True)
            settings[name] = convert(method, src, dst, work, feeds.get(name, []), f"{layout.source} {name}", progress)
        for src, staged, _ in layout.extras:
            (stage / staged).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, stage / staged)
        spec, variant_cache = layout.stage_spec(stage)
        try:
            variant, variant_load_ms = _load(spec, variant_cache)
        except ModelLoadError as exc:
            raise OptimizeError(f"the {method} variant does not load: {exc.message}") from exc

        samples = samples_for(reference, "measurement", layout.cache_dir)
        accuracy = compare(reference, samples, run_role(reference.adapter, samples), run_role(variant.adapter, samples))
        # Speed on what the fp32 model is fed for the first measurement input (detectors) or crop batch.
        with recording(reference.adapter) as timing_feeds:
            run_role(reference.adapter, samples[: 1 if role == "detector" else EMBED_CHUNK])
        fp32_ms, variant_ms = time_sessions(reference.adapter.sessions, variant.adapter.sessions, timing_feeds, rounds)

        fp32_bytes = sum(p.stat().st_size for p in layout.fp32.values())
        variant_bytes = sum((stage / p).stat().st_size for p in layout.staged.values())
        checks = {}
        failures = []
        for floor in floors_for(role):
            value = accuracy.get(floor.metric)
            ok = floor.holds(value, method)
            checks[floor.metric] = {"bound": floor.bound, "limit": floor.limits[method], "value": value, "ok": ok}
            if not ok:
                word = "at least" if floor.bound == "min" else "at most"
                failures.append(f"{floor.metric} = {value} but the {role} floor for {method} is {word} {floor.limits[method]}")
        manifest = {
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
            "performance": {
                "fp32_bytes": fp32_bytes,
                "variant_bytes": variant_bytes,
                "size_ratio": round(variant_bytes / fp32_bytes, 4),
                "fp32_ms": round(fp32_ms, 3),
                "variant_ms": round(variant_ms, 3),
                "speedup": round(fp32_ms / variant_ms, 3) if variant_ms > 0 else None,
                "timed_on": "the first measurement picture" if role == "detector" else f"a batch of {min(EMBED_CHUNK, len(samples))} face crops",
                "rounds": rounds,
                "intra_op_threads": TIMING_THREADS,
                "fp32_load_ms": round(reference_load_ms, 1),
                "variant_load_ms": round(variant_load_ms, 1),
            },
            "onnxruntime": ort.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        result = OptimizeResult(manifest, layout.manifest, dict(layout.final), tuple(failures), written=not failures or force)
        if failures and not force:
            raise AccuracyFloorError(f"{layout.source} {method} refused, nothing written: " + "; ".join(failures) + " (--force keeps it anyway)", result)
        for name, staged in layout.staged.items():
            _install(stage / staged, layout.final[name])
        for src, staged, final in layout.extras:
            if final.resolve() != src.resolve():
                _install(stage / staged, final)
        layout.manifest.parent.mkdir(parents=True, exist_ok=True)
        layout.manifest.write_text(json.dumps(manifest, indent=2))
    logger.info("%s %s written to %s", layout.source, method, ", ".join(str(p) for p in layout.final.values()))
    return result


def _install(staged: Path, final: Path) -> None:
    """Copy a staged file into place atomically (a reader never sees half a model)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    shutil.copyfile(staged, tmp)
    tmp.replace(final)


# The accuracy numbers the table shows, per role (the manifest keeps them all).
TABLE_METRICS = {
    "detector": ("faces_fp32", "faces_variant", "mean_box_iou", "min_box_iou", "max_score_change", "max_landmark_shift_px"),
    "recognizer": (
        "crops",
        "min_embedding_cosine",
        "max_embedding_distance",
        "pairs",
        "decision_changes",
        "max_pair_score_change",
        "borderline_pairs",
        "borderline_decision_changes",
    ),
    "classifier": ("crops", "max_probability_change", "mean_probability_change", "label_changes"),
}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(manifests: Sequence[dict]) -> str:
    """A text table, one row per variant and one block per role: size, CPU speed, accuracy against the floors."""
    blocks = []
    for role in ("detector", "recognizer", "classifier"):
        rows_of = [m for m in manifests if m["role"] == role]
        if not rows_of:
            continue
        header = ["model", "variant", "MiB", "size x", "speed x", "ms fp32/variant", *TABLE_METRICS[role], "floors"]
        rows = []
        for m in rows_of:
            perf = m["performance"]
            verdict = "ok" if m["within_floors"] else ("FORCED" if m["forced"] else "REFUSED")
            rows.append(
                [
                    m["model"],
                    m["variant"],
                    f"{perf['variant_bytes'] / 2**20:.2f}",
                    f"{perf['size_ratio']:.3f}",
                    _cell(perf["speedup"]),
                    f"{perf['fp32_ms']:.1f}/{perf['variant_ms']:.1f}",
                    *(_cell(m["accuracy"].get(k)) for k in TABLE_METRICS[role]),
                    verdict,
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        methods = list(dict.fromkeys(m["variant"] for m in rows_of))
        floors = "; ".join(
            f"{f.metric} {'>=' if f.bound == 'min' else '<='} " + ", ".join(f"{f.limits[v]:g} ({v})" for v in methods) for f in floors_for(role)
        )
        blocks.append("\n".join([f"{role}s - floors: {floors}", lines[0], "  ".join("-" * w for w in widths), *lines[1:]]))
    return "\n\n".join(blocks)
