"""A YOLOv8-face ONNX model with the exact I/O and metadata of an Ultralytics export of yolov8n-face, seeded weights.

derronqi/yolov8-face is an Ultralytics pose model (one class, ``kpt_shape`` [5, 3]);
its ONNX export takes ``images`` (1, 3, 640, 640) RGB in 0..1 and returns ``output0``
(1, 20, 8400): rows cx, cy, w, h (input pixels), face score (sigmoid), then 5 keypoints
as x, y (input pixels) and visibility (sigmoid). The 8400 anchors are the 80x80, 40x40
and 20x20 grids of strides 8, 16 and 32, each row-major, in that order.

The weights here are random (``numpy.random.default_rng(SEED)``, so every build gives
the same bytes), but the graph decodes them as the real head does (Ultralytics
``Detect`` / ``Pose`` in export mode):

* boxes: a DFL over 16 bins per side, ``ltrb = sum(softmax(logits) * arange(16))``,
  then ``x1y1 = anchor - lt``, ``x2y2 = anchor + rb`` (anchor = cell index + 0.5),
  and ``(cx, cy, w, h) = ((x1y1 + x2y2) / 2, x2y2 - x1y1) * stride``;
* score: ``sigmoid(logit)``, the logit map standardised per picture and level (instance norm) before its threshold;
* keypoints: ``x = (2 * raw_x + anchor_x - 0.5) * stride`` (same for y),
  visibility ``sigmoid(raw_v)``.

The bin and score biases are tuned so real photos get a modest number of candidates
above conf 0.25 (some overlapping above IoU 0.7, so NMS matters) and keypoints sit in
and around their box. The metadata is what ``Exporter.export_onnx`` writes, so
``ultralytics.YOLO(path, task="pose")`` loads the file as a pose model with imgsz 640.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.faithful.nets import Net

SEED = 20240817
SIZE = 640
STRIDES = (8, 16, 32)
REG_MAX = 16
WIDTH = 16
ANCHORS = sum((SIZE // s) ** 2 for s in STRIDES)  # 8400
# Score = sigmoid(SCORE_GAIN * (z - threshold)) with z the standardised logit map of the level: on the
# pictures the reference records, about 5-80 candidates pass conf 0.25.
SCORE_GAIN = 1.5
SCORE_THRESHOLDS = {8: 4.3, 16: 3.6, 32: 3.1}
# DFL bin logits fall with the bin index, so sides are a couple of strides long.
BIN_SLOPE = -0.2
BIN_GAIN = 2.0
# Keypoint offsets from the anchor, in strides: eyes, nose, mouth corners.
KEYPOINT_OFFSETS = np.array([[-2.4, -1.6], [2.4, -1.6], [0.0, 0.4], [-1.8, 2.4], [1.8, 2.4]], np.float32)
KEYPOINT_GAIN = 0.6
VISIBILITY_BIAS = 0.0
ULTRALYTICS_VERSION = "8.4.190"


def export_metadata(batch: int = 1, dynamic: bool = False) -> dict[str, str]:
    """The ``metadata_props`` an Ultralytics ONNX export of yolov8n-face writes (values as ``str(v)``, as it does).

    ``dynamic`` marks the batch-axis variant; a real ``dynamic=True`` export also frees height and width,
    which this graph keeps at 640 (Ultralytics would then letterbox to the minimum rectangle and fail).
    """
    args = {
        "batch": batch,
        "data": None,
        "dynamic": dynamic,
        "quantize": None,
        "opset": None,
        "simplify": True,
        "nms": False,
        "fraction": 1.0,
    }
    meta = {
        "description": "Ultralytics YOLOv8n-face model trained on widerface.yaml",
        "author": "Ultralytics",
        "date": "2024-08-17T00:00:00+00:00",
        "version": ULTRALYTICS_VERSION,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": 32,
        "task": "pose",
        "head": "Pose",
        "batch": batch,
        "imgsz": [SIZE, SIZE],
        "names": {0: "face"},
        "args": args,
        "channels": 3,
        "end2end": False,
        "kpt_shape": [5, 3],
    }
    return {key: str(value) for key, value in meta.items()}


def _silu(g: Net, x: str) -> str:
    return g.op("Mul", x, g.op("Sigmoid", x))


def _head(g: Net, feat: str, stride: int) -> str:
    """(N, WIDTH, h, w) features -> (N, 20, h*w) decoded rows for one stride."""
    grid = SIZE // stride
    flat = g.const([0, 0, -1], np.int64)
    # Box: 4 sides x 16 bins, softmax over bins, expectation over bin indices (Ultralytics DFL).
    bins = g.conv(feat, WIDTH, 4 * REG_MAX, 1, 1, gain=BIN_GAIN, bias=np.tile(BIN_SLOPE * np.arange(REG_MAX), 4))
    bins = g.op("Reshape", bins, g.const([0, 4, REG_MAX, -1], np.int64))
    probs = g.op("Softmax", bins, axis=2)
    ltrb = g.op("ReduceSum", g.op("Mul", probs, g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, 1, REG_MAX, 1))), g.const([2], np.int64), keepdims=0)
    lt, rb = g.op("Slice", ltrb, g.const([0], np.int64), g.const([2], np.int64), g.const([1], np.int64)), g.op(
        "Slice", ltrb, g.const([2], np.int64), g.const([4], np.int64), g.const([1], np.int64)
    )
    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32) + 0.5, np.arange(grid, dtype=np.float32) + 0.5)
    anchors = np.stack([cols.ravel(), rows.ravel()])[None]  # (1, 2, h*w), row-major
    anchor = g.const(anchors)
    x1y1, x2y2 = g.op("Sub", anchor, lt), g.op("Add", anchor, rb)
    centre = g.op("Div", g.op("Add", x1y1, x2y2), g.const(2.0))
    size = g.op("Sub", x2y2, x1y1)
    box = g.op("Mul", g.op("Concat", centre, size, axis=1), g.const(float(stride)))
    # Score: the logit map standardised per picture (instance norm), so each picture gets about the same share
    # of candidates whatever its contrast; the level's threshold sets that share.
    logit = g.op("InstanceNormalization", g.conv(feat, WIDTH, 1, 1, 1), g.const([1.0]), g.const([0.0]), epsilon=1e-5)
    logit = g.op("Mul", g.op("Sub", logit, g.const(SCORE_THRESHOLDS[stride])), g.const(SCORE_GAIN))
    score = g.op("Sigmoid", g.op("Reshape", logit, flat))
    # Keypoints: raw (x, y, v) per point; x = (2 * raw + anchor - 0.5) * stride.
    kpt_bias = np.concatenate([np.r_[(KEYPOINT_OFFSETS[i] + 0.5) / 2, VISIBILITY_BIAS] for i in range(len(KEYPOINT_OFFSETS))])
    raw = g.op("Reshape", g.conv(feat, WIDTH, 15, 1, 1, gain=KEYPOINT_GAIN, bias=kpt_bias), g.const([0, 5, 3, -1], np.int64))
    xy_raw = g.op("Slice", raw, g.const([0], np.int64), g.const([2], np.int64), g.const([2], np.int64))
    v_raw = g.op("Slice", raw, g.const([2], np.int64), g.const([3], np.int64), g.const([2], np.int64))
    xy = g.op("Mul", g.op("Add", g.op("Mul", xy_raw, g.const(2.0)), g.const(anchors[:, None] - 0.5)), g.const(float(stride)))
    kpts = g.op("Reshape", g.op("Concat", xy, g.op("Sigmoid", v_raw), axis=2), g.const([0, 15, -1], np.int64))
    return g.op("Concat", box, score, kpts, axis=1)


def yolov8_face_model(dynamic_batch: bool = False, seed: int = SEED) -> bytes:
    """The serialized model: ``images`` [1, 3, 640, 640] -> ``output0`` [1, 20, 8400] (batch axis 'batch' if asked)."""
    g = Net(seed)
    x = "images"
    feats, stride, cin = {}, 1, 3
    while stride < max(STRIDES):
        x = _silu(g, g.conv(x, cin, WIDTH, 3, 2, zero_mean=cin == 3))
        cin, stride = WIDTH, stride * 2
        if stride in STRIDES:
            feats[stride] = x
    out = g.op("Concat", *[_head(g, feats[s], s) for s in STRIDES], axis=2)
    g.nodes.append(helper.make_node("Identity", [out], ["output0"]))
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        g.nodes,
        "main_graph",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 20, ANCHORS])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch", producer_version="2.13.0")
    model.ir_version = 8
    for key, value in export_metadata(dynamic=dynamic_batch).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    return model.SerializeToString()
