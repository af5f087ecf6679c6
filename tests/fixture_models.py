"""Small ONNX models generated in code, with the exact I/O of real formats and known behaviour.

They are not trained networks: their weights compute something we can predict,
so tests check letterbox, decoding, NMS, alignment and preprocessing against
ground truth rather than shapes alone.

* ``square-*`` detectors find bright squares (grey level above ~220 on a
  background below ~150): the box comes from local image moments read off an
  integral image, so it is exact to about a pixel for squares of 4 to 160 model
  pixels that stand well apart (``square-yolov10`` looks at stride 32 only:
  one square per picture). Landmarks sit at fixed
  fractions of the box (:data:`SQUARE_LANDMARKS`). Squares closer than about four
  strides disturb each other's windows, so a crowd of faces needs a real detector
  (``tests/graph/test_crowd.py`` tiles a real face for MTCNN).
* ``pooled-arcface`` embeds a crop as a fixed linear map of its 4x4 grid of
  channel means (:func:`pooled_arcface_reference` computes the same in numpy).
* ``rgb-classifier`` scores "fake" as ``sigmoid(4 * (mean R - mean B))`` of the
  normalised input (:func:`rgb_classifier_reference`).

Test configs name them by path: :func:`fixture_path` writes each once into a folder of its own
(a model file, or a Hugging Face folder for the classifiers), where Serve replicas and Ray Data
actors load it as they would a user's model. They are test code: nothing the product installs
can reach them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from facegraph.models.demo import RGB_CLASSIFIER, rgb_classifier, write_hf_classifier
from facegraph.models.onnx_graph import GraphBuilder

SIZE = 640
STRIDES = (8, 16, 32)
# Landmarks as fractions of the box: eyes, nose, mouth corners.
SQUARE_LANDMARKS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)
POOLED_ARCFACE_DIM = 32



def _square_fields(g: GraphBuilder, grey: str, stride: int) -> dict[str, str]:
    """Per-anchor box centre, size and score for one stride, from local moments.

    ``grey`` is (N, 1, SIZE, SIZE) in 0..255. Returns names of (N, gh, gw) double tensors.
    """
    mask = g.op("Clip", g.op("Div", g.op("Sub", grey, g.const(180.0)), g.const(40.0)), g.const(0.0), g.const(1.0))
    mask = g.op("Cast", mask, to=TensorProto.DOUBLE)
    xs = g.const((np.arange(SIZE) + 0.5).reshape(1, 1, 1, SIZE), np.float64)
    ys = g.const((np.arange(SIZE) + 0.5).reshape(1, 1, SIZE, 1), np.float64)
    mx, my = g.op("Mul", mask, xs), g.op("Mul", mask, ys)
    stack = g.op("Concat", mask, mx, my, g.op("Mul", mx, xs), g.op("Mul", my, ys), axis=1)
    integral = g.op("CumSum", g.op("CumSum", stack, g.const(2, np.int64)), g.const(3, np.int64))
    # Zero row and column in front, so integral[i, j] sums rows < i and columns < j.
    integral = g.op("Pad", integral, g.const([0, 0, 1, 1, 0, 0, 0, 0], np.int64))
    grid = SIZE // stride
    centres = (np.arange(grid) + 0.5) * stride

    def window_sums(half: float) -> list[str]:
        lo = g.const(np.clip(centres - half, 0, SIZE).astype(np.int64), np.int64)
        hi = g.const(np.clip(centres + half, 0, SIZE).astype(np.int64), np.int64)
        rows_hi, rows_lo = g.op("Gather", integral, hi, axis=2), g.op("Gather", integral, lo, axis=2)
        total = g.op(
            "Sub",
            g.op("Add", g.op("Gather", rows_hi, hi, axis=3), g.op("Gather", rows_lo, lo, axis=3)),
            g.op("Add", g.op("Gather", rows_hi, lo, axis=3), g.op("Gather", rows_lo, hi, axis=3)),
        )
        return g.ops("Split", [total], 5, axis=1, num_outputs=5)

    m0, sx, sy, sxx, syy = window_sums(4 * stride)
    big = window_sums(8 * stride)[0]
    safe = g.op("Max", m0, g.const(1e-3, np.float64))
    cx, cy = g.op("Div", sx, safe), g.op("Div", sy, safe)

    def side(sq: str, c: str) -> str:
        var = g.op("Sub", g.op("Div", sq, safe), g.op("Mul", c, c))
        twelve_var = g.op("Add", g.op("Mul", var, g.const(12.0, np.float64)), g.const(1.0, np.float64))
        return g.op("Sqrt", g.op("Relu", twelve_var))

    w, h = side(sxx, cx), side(syy, cy)
    ax = g.const(centres.reshape(1, 1, 1, grid), np.float64)
    ay = g.const(centres.reshape(1, 1, grid, 1), np.float64)
    dx, dy = g.op("Sub", cx, ax), g.op("Sub", cy, ay)
    dist2 = g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy))
    centred = g.op("Exp", g.op("Div", g.op("Neg", dist2), g.const(2.0 * stride * stride, np.float64)))
    # Whole square inside the window: the window's mass equals the doubled window's.
    ratio = g.op("Div", m0, g.op("Max", big, g.const(1e-3, np.float64)))
    contained = g.op("Mul", g.op("Mul", ratio, ratio), g.op("Mul", ratio, ratio))
    # A window filled with bright pixels measures the window, not the square.
    fill = g.op("Sqrt", g.op("Relu", g.op("Sub", g.const(1.0, np.float64), g.op("Div", m0, g.const((8.0 * stride) ** 2, np.float64)))))
    present = g.op("Clip", m0, g.const(0.0, np.float64), g.const(1.0, np.float64))
    # One square fills its own box; two squares in one window fill a fraction of theirs.
    solid = g.op("Clip", g.op("Div", m0, g.op("Max", g.op("Mul", w, h), g.const(1.0, np.float64))), g.const(0.0, np.float64), g.const(1.0, np.float64))
    solid = g.op("Mul", g.op("Mul", solid, solid), g.op("Mul", solid, solid))
    score = g.op("Mul", g.op("Mul", g.op("Mul", centred, contained), g.op("Mul", fill, present)), solid)
    squeeze = lambda t: g.op("Cast", g.op("Squeeze", t, g.const([1], np.int64)), to=TensorProto.FLOAT)  # noqa: E731
    return {"cx": squeeze(cx), "cy": squeeze(cy), "w": squeeze(w), "h": squeeze(h), "score": squeeze(score)}


def _grey(g: GraphBuilder, images: str, mean: float, scale: float) -> str:
    """(N,3,H,W) normalised input -> (N,1,H,W) grey in 0..255."""
    grey = g.op("ReduceMean", images, g.const([1], np.int64), keepdims=1)
    return g.op("Add", g.op("Div", grey, g.const(scale)), g.const(mean))


def _landmarks(g: GraphBuilder, f: dict[str, str]) -> list[tuple[str, str]]:
    x1 = g.op("Sub", f["cx"], g.op("Mul", f["w"], g.const(0.5)))
    y1 = g.op("Sub", f["cy"], g.op("Mul", f["h"], g.const(0.5)))
    return [
        (g.op("Add", x1, g.op("Mul", f["w"], g.const(fx))), g.op("Add", y1, g.op("Mul", f["h"], g.const(fy))))
        for fx, fy in SQUARE_LANDMARKS
    ]


def _flat(g: GraphBuilder, t: str) -> str:
    """(N, gh, gw) -> (N, 1, gh*gw)."""
    return g.op("Reshape", t, g.const([0, 1, -1], np.int64))


def square_yolov8_face() -> bytes:
    g = GraphBuilder()
    images = "images"
    grey = _grey(g, images, 0.0, 1.0 / 255.0)
    per_stride = []
    for stride in STRIDES:
        f = _square_fields(g, grey, stride)
        rows = [f["cx"], f["cy"], f["w"], f["h"], f["score"]]
        one = g.op("Div", f["score"], g.op("Max", f["score"], g.const(1e-6)))
        for x, y in _landmarks(g, f):
            rows += [x, y, one]
        per_stride.append(g.op("Concat", *[_flat(g, r) for r in rows], axis=1))
    out = g.op("Concat", *per_stride, axis=2)
    return g.model(
        [helper.make_tensor_value_info(images, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 20, 8400])],
        {out: "output0"},
    )


def square_scrfd() -> bytes:
    """SCRFD layout with batch-less outputs (A, k), as insightface's batch-1 exports have."""
    g = GraphBuilder()
    images = "input.1"
    grey = _grey(g, images, 127.5, 1.0 / 128.0)
    scores, boxes, kps = [], [], []
    for stride in STRIDES:
        f = _square_fields(g, grey, stride)
        grid = SIZE // stride
        # SCRFD anchor centres sit at the cell's top-left corner, two anchors per cell.
        ax = g.const((np.arange(grid) * stride).reshape(1, 1, grid).astype(np.float32))
        ay = g.const((np.arange(grid) * stride).reshape(1, grid, 1).astype(np.float32))
        inv = g.const(1.0 / stride)
        half_w, half_h = g.op("Mul", f["w"], g.const(0.5)), g.op("Mul", f["h"], g.const(0.5))
        ltrb = [
            g.op("Sub", ax, g.op("Sub", f["cx"], half_w)),
            g.op("Sub", ay, g.op("Sub", f["cy"], half_h)),
            g.op("Sub", g.op("Add", f["cx"], half_w), ax),
            g.op("Sub", g.op("Add", f["cy"], half_h), ay),
        ]
        points = []
        for x, y in _landmarks(g, f):
            points += [g.op("Sub", x, ax), g.op("Sub", y, ay)]

        def column(parts: list[str]) -> str:
            # (1, gh, gw) per part -> (gh*gw*2, k): per cell, two identical anchors.
            stacked = g.op("Concat", *[g.op("Unsqueeze", g.op("Mul", p, inv) if p not in (f["score"],) else p, g.const([3], np.int64)) for p in parts], axis=3)
            flat = g.op("Reshape", stacked, g.const([-1, 1, len(parts)], np.int64))
            return g.op("Reshape", g.op("Concat", flat, flat, axis=1), g.const([-1, len(parts)], np.int64))

        scores.append(column([f["score"]]))
        boxes.append(column(ltrb))
        kps.append(column(points))
    outs = scores + boxes + kps
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    widths = [1] * 3 + [4] * 3 + [10] * 3
    counts = [(SIZE // s) ** 2 * 2 for s in STRIDES] * 3
    return g.model(
        [helper.make_tensor_value_info(images, TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [c, w]) for n, c, w in zip(names, counts, widths)],
        dict(zip(outs, names)),
    )


def square_yolov10() -> bytes:
    """YOLOv10 end-to-end layout: one row per local score peak at stride 32, top 300."""
    g = GraphBuilder()
    images = "images"
    grey = _grey(g, images, 0.0, 1.0 / 255.0)
    f = _square_fields(g, grey, 32)
    # A tiny tilt by anchor index breaks ties between equally good neighbours.
    tilt = g.const((1.0 + 1e-4 * np.arange(400, dtype=np.float32) / 400).reshape(1, 20, 20))
    score4 = g.op("Unsqueeze", g.op("Mul", f["score"], tilt), g.const([1], np.int64))
    peak = g.op("MaxPool", score4, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    is_peak = g.op("Cast", g.op("Equal", score4, peak), to=TensorProto.FLOAT)
    score = g.op("Squeeze", g.op("Mul", score4, is_peak), g.const([1], np.int64))
    half_w, half_h = g.op("Mul", f["w"], g.const(0.5)), g.op("Mul", f["h"], g.const(0.5))
    cols = [
        g.op("Sub", f["cx"], half_w),
        g.op("Sub", f["cy"], half_h),
        g.op("Add", f["cx"], half_w),
        g.op("Add", f["cy"], half_h),
        score,
        g.op("Mul", score, g.const(0.0)),
    ]
    rows = g.op("Concat", *[g.op("Reshape", c, g.const([0, -1, 1], np.int64)) for c in cols], axis=2)  # (N, 400, 6)
    flat_scores = g.op("Reshape", score, g.const([0, -1], np.int64))
    _, index = g.ops("TopK", [flat_scores, g.const([300], np.int64)], 2, axis=1)
    index = g.op("Unsqueeze", index, g.const([2], np.int64))
    index = g.op("Expand", index, g.const([1, 1, 6], np.int64))
    out = g.op("GatherElements", rows, index, axis=1)
    return g.model(
        [helper.make_tensor_value_info(images, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 300, 6])],
        {out: "output0"},
    )


@lru_cache(maxsize=1)
def pooled_arcface_weights() -> np.ndarray:
    rng = np.random.default_rng(1234)
    q, _ = np.linalg.qr(rng.standard_normal((48, POOLED_ARCFACE_DIM)))
    return q.astype(np.float32)  # orthonormal columns: a projection, no stretching


def pooled_arcface() -> bytes:
    g = GraphBuilder()
    pooled = g.op("AveragePool", "input.1", kernel_shape=[28, 28], strides=[28, 28])
    flat = g.op("Flatten", pooled, axis=1)
    out = g.op("MatMul", flat, g.const(pooled_arcface_weights()))
    return g.model(
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", POOLED_ARCFACE_DIM])],
        {out: "683"},
    )


def pooled_arcface_reference(crops: np.ndarray) -> np.ndarray:
    """What ``pooled-arcface`` returns (L2-normalised) for (N, 112, 112, 3) uint8 crops."""
    x = (crops.astype(np.float64) - 127.5) / 127.5
    pooled = x.reshape(len(x), 4, 28, 4, 28, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(len(x), 48)
    emb = pooled @ pooled_arcface_weights().astype(np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)



def rgb_classifier_reference(crops: np.ndarray) -> np.ndarray:
    """Fake probability ``rgb-classifier`` gives (N, 64, 64, 3) uint8 RGB crops."""
    x = crops.astype(np.float64) / 255.0
    x = (x - np.asarray(RGB_CLASSIFIER["mean"])) / np.asarray(RGB_CLASSIFIER["std"])
    means = x.mean(axis=(1, 2))
    return 1 / (1 + np.exp(-4 * (means[:, 0] - means[:, 2])))


def brittle_classifier() -> bytes:
    """``rgb-classifier``'s I/O, but it fails at run time on any batch of more than one crop.

    For fault tests: a stage that raises inside its batch.
    """
    g = GraphBuilder()
    size = RGB_CLASSIFIER["size"]
    flat = g.op("Reshape", "pixel_values", g.const([1, 3 * size[0] * size[1]], np.int64))
    logits = g.op("MatMul", flat, g.const(np.zeros((3 * size[0] * size[1], 2), np.float32)))
    return g.model(
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size[1], size[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        {logits: "logits"},
    )



_FIXTURES = {
    "square-yolov8-face": lambda: ({"model": square_yolov8_face()}, {}),
    "square-scrfd": lambda: ({"model": square_scrfd()}, {}),
    "square-yolov10": lambda: ({"model": square_yolov10()}, {}),
    "pooled-arcface": lambda: ({"model": pooled_arcface()}, {}),
    "rgb-classifier": lambda: ({"model": rgb_classifier()}, {"preprocessing": dict(RGB_CLASSIFIER)}),
    "brittle-classifier": lambda: ({"model": brittle_classifier()}, {"preprocessing": dict(RGB_CLASSIFIER)}),
}


@lru_cache(maxsize=None)
def _cached(name: str):
    return _FIXTURES[name]()


def build_fixture(name: str) -> tuple[dict[str, bytes], dict]:
    """Serialized models and family resources for a fixture name."""
    if name not in _FIXTURES:
        raise KeyError(f"unknown fixture '{name}'; known: {', '.join(sorted(_FIXTURES))}")
    files, resources = _cached(name)
    return dict(files), {k: (dict(v) if isinstance(v, dict) else v) for k, v in resources.items()}


# The classifiers carry their preprocessing in a Hugging Face folder, as users' exports do.
_FOLDERS = {"rgb-classifier", "brittle-classifier"}


def fixture_path(name: str) -> str:
    """A fixture as a model path for a config: written once per content, safe for concurrent writers."""
    (files, _) = build_fixture(name)
    model = files["model"]
    root = Path(os.environ.get("FACEGRAPH_TEST_FIXTURES") or Path(tempfile.gettempdir()) / f"facegraph-fixtures-{os.getuid()}")
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{hashlib.sha256(model).hexdigest()[:12]}"
    if name in _FOLDERS:
        if not (target / "onnx" / "model.onnx").is_file():
            staging = Path(tempfile.mkdtemp(dir=root))
            write_hf_classifier(staging, tuple(RGB_CLASSIFIER["labels"]), model)
            _publish(staging, target)
        return str(target)
    target = target.with_suffix(".onnx")
    if not target.is_file():
        handle, staging = tempfile.mkstemp(dir=root, suffix=".part")
        os.close(handle)
        Path(staging).write_bytes(model)
        _publish(Path(staging), target)
    return str(target)


def _publish(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:  # another process published the same content first
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)



def draw_squares(width: int, height: int, boxes, seed: int = 0) -> np.ndarray:
    """A textured dark RGB picture with white squares at integer ``boxes`` (x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 140, size=(height, width, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1) : int(y2), int(x1) : int(x2)] = 255
    return image
