"""insightface's published layouts: SCRFD detectors (``det_10g.onnx`` and kin) and ArcFace recognizers.

* ``scrfd(...)``: input ``input.1`` (N, 3, H, W) normalised ``(x - 127.5) / 128``; per stride a
  score (sigmoid), a distance box (4, in strides, positive) and optionally 10 landmark offsets;
  3 strides x 2 anchors (``det_10g``, ``det_2.5g``, ``det_500m`` without landmarks) or 5 strides
  x 1 anchor. ``det_10g`` itself: batch 1, dynamic height and width, nine outputs without a batch
  axis, named by number, in the order scores, boxes, landmarks.
* ``arcface(...)``: input ``input.1`` (None, 3, S, S) -> (None, 512) (``w600k_r50.onnx``); with
  ``mxnet=True`` the graph starts with ``_minusscalar0`` / ``_mulscalar0`` nodes and takes raw
  pixels, as MXNet conversions (``glintr100.onnx``) do.
"""

from __future__ import annotations

import numpy as np

from tests.faithful.nets import Net, tensor

STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}
# Score head: standardised logits, so about 2 % of anchors (z > 2) score over 0.5 on any picture.
_SCORE_GAIN, _SCORE_BIAS = 1.0, -2.0


def scrfd(
    levels: int = 3,
    landmarks: bool = True,
    batched: bool = False,
    size: tuple[int, int] | None = None,
    names: str = "numbers",
    order: str = "insightface",
    seed: int = 10,
) -> bytes:
    """One SCRFD file.

    Args:
        levels: 3 (strides 8-32, 2 anchors) or 5 (strides 8-128, 1 anchor).
        batched: outputs (N, A, k) with a dynamic batch axis; else (A, k) and batch 1.
        size: fixed input (width, height); None: dynamic.
        names: ``numbers`` (as the published files) or ``roles`` (``score_8`` ..., as ``scrfd2onnx`` names them).
        order: ``insightface`` (scores, boxes, landmarks by stride) or ``shuffled`` (names must decide).
    """
    net = Net(seed)
    strides = STRIDES[levels]
    anchors = 2 if levels == 3 else 1
    feats = net.pyramid("input.1", strides)
    heads: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for s in strides:
        f = net.relu_conv(feats[s], 16, 16, 1)
        score = net.op("Sigmoid", net.normalised(net.conv(f, 16, anchors, 1), anchors, _SCORE_GAIN, _SCORE_BIAS))
        heads["score"].append(net.rows(score, 1, batched))
        dist = net.op("Add", net.op("Softplus", net.conv(f, 16, anchors * 4, 1)), net.const(0.8))
        heads["bbox"].append(net.rows(dist, 4, batched))
        if landmarks:
            kps = net.op("Mul", net.conv(f, 16, anchors * 10, 1), net.const(0.7))
            heads["kps"].append(net.rows(kps, 10, batched))
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outs, out_names, shapes = [], [], []
    number = 448
    for kind in ("score", "bbox", "kps"):
        for s, t in zip(strides, heads[kind]):
            outs.append(t)
            out_names.append(f"{kind}_{s}" if names == "roles" else str(number))
            shapes.append((["batch", f"anchors_{s}", widths[kind]] if batched else [f"anchors_{s}", widths[kind]]))
            number += 3 if kind == "score" else 1
    triples = list(zip(outs, out_names, shapes))
    if order == "shuffled":
        triples = [triples[i] for i in np.random.default_rng(seed + 1).permutation(len(triples))]
    h, w = (size[1], size[0]) if size else ("height", "width")
    inp = tensor("input.1", ["batch" if batched else 1, 3, h, w])
    return net.model([inp], [tensor(n, sh) for _, n, sh in triples], {t: n for t, n, _ in triples})


def arcface(size: int = 112, mxnet: bool = False, seed: int = 20) -> bytes:
    """An ArcFace-layout recognizer whose embedding depends on where every part of the crop sits.

    No global pooling: the last feature map (stride 16) is flattened into the 512-d layer, so
    a crop aligned a pixel off gives a measurably different embedding.
    """
    net = Net(seed)
    x = "input.1"
    if mxnet:
        # MXNet conversions normalise inside the graph, and insightface then feeds raw pixels.
        x = net.op("Sub", x, net.const(127.5), node_name="_minusscalar0")
        x = net.op("Mul", x, net.const(1 / 128.0), node_name="_mulscalar0")
    for cin, cout in ((3, 16), (16, 24), (24, 32), (32, 32)):
        x = net.relu_conv(x, cin, cout, 2)
    side = size // 16
    flat = net.op("Flatten", x, axis=1)
    weights = net.rng.standard_normal((32 * side * side, 512)) / np.sqrt(32 * side * side)
    emb = net.op("MatMul", flat, net.const(weights))
    return net.model([tensor("input.1", ["None", 3, size, size])], [tensor("683", ["None", 512])], {emb: "683"})
