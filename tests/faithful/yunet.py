"""OpenCV's YuNet layout (``face_detection_yunet_2023mar.onnx``): the file ``cv2.FaceDetectorYN`` runs.

Input ``input`` (1, 3, H, W): BGR pixels 0-255, H and W multiples of 32. Twelve outputs
``cls_8, cls_16, cls_32, obj_8, ..., bbox_32, kps_8, ..., kps_32``, each (1, cells, k) with one
anchor per cell in row-major order: class and objectness probabilities (k = 1), the box
(k = 4: centre offset in cells, log width and height in strides) and five points (k = 10,
offsets in cells).
"""

from __future__ import annotations


from tests.faithful.nets import Net, tensor

STRIDES = (8, 16, 32)
# Class and objectness heads: standardised logits, so a few cells per picture score over 0.6.
_GAIN, _BIAS = 1.0, -1.0


def yunet(size: tuple[int, int] | None = None, seed: int = 30) -> bytes:
    """One YuNet file; ``size`` (width, height) fixes the input, None leaves it dynamic (as the 2023 export)."""
    net = Net(seed)
    x = net.op("Mul", "input", net.const(1 / 128.0))
    x = net.op("Sub", x, net.const(1.0))
    feats = net.pyramid(x, STRIDES)
    outs: dict[str, str] = {}
    for s in STRIDES:
        f = net.relu_conv(feats[s], 16, 16, 1)
        outs[f"cls_{s}"] = net.rows(net.op("Sigmoid", net.normalised(net.conv(f, 16, 1, 1), 1, _GAIN, _BIAS)), 1, True)
        outs[f"obj_{s}"] = net.rows(net.op("Sigmoid", net.normalised(net.conv(f, 16, 1, 1), 1, _GAIN, _BIAS)), 1, True)
        centre = net.op("Add", net.op("Mul", net.op("Tanh", net.conv(f, 16, 2, 1)), net.const(0.4)), net.const(0.5))
        log_size = net.op("Add", net.op("Mul", net.conv(f, 16, 2, 1), net.const(0.3)), net.const(1.0))
        outs[f"bbox_{s}"] = net.rows(net.op("Concat", centre, log_size, axis=1), 4, True)
        outs[f"kps_{s}"] = net.rows(net.op("Add", net.op("Mul", net.conv(f, 16, 10, 1), net.const(0.5)), net.const(0.5)), 10, True)
    widths = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
    names = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
    h, w = (size[1], size[0]) if size else ("height", "width")
    return net.model(
        [tensor("input", [1, 3, h, w])],
        [tensor(n, [1, f"cells_{n.split('_')[1]}", widths[n.split("_")[0]]]) for n in names],
        {outs[n]: n for n in names},
    )
