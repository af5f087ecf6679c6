"""The converters: fp16, dynamic and static int8, q4 and bnb4, ORT-optimised."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from facegraph.models.optimize.floors import (
    BNB4_BLOCK_SIZE,
    BNB4_QUANT_TYPE,
    FOUR_BIT_METHODS,
    FOUR_BIT_MIN_ELEMENTS,
    FOUR_BIT_MIN_SHARE,
    METHODS,
    OptimizeError,
    Q4_BLOCK_SIZE,
)

logger = logging.getLogger(__name__)


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
    """Names of MatMuls with a constant weight of at least ``FOUR_BIT_MIN_ELEMENTS``, and a summary of the model's weights."""
    weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    total = sum(weights.values())
    shapes = {t.name: "x".join(str(d) for d in t.dims) for t in model.graph.initializer}
    matmuls = [(n.name or n.output[0], weights.get(n.input[1], 0)) for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2]
    large = [(name, size) for name, size in matmuls if size >= FOUR_BIT_MIN_ELEMENTS]
    summary = {
        "weights": total,
        "matmul_weight_shapes": [shapes[n.input[1]] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in shapes],
        "large_matmuls": len(large),
        "large_matmul_weight_share": round(sum(s for _, s in large) / total, 4) if total else 0.0,
        "gemm_nodes": sum(1 for n in model.graph.node if n.op_type == "Gemm"),
    }
    return [name for name, _ in large], summary


_FOUR_BIT_OPS = {"q4": "MatMulNBits", "bnb4": "MatMulBnb4"}


def check_four_bit(method: str, files: dict[str, Path]) -> dict[str, dict]:
    """Per file, what ``method``'s 4-bit MatMul quantisation would touch; raises OptimizeError when it would not pay."""
    if method not in FOUR_BIT_METHODS:
        raise OptimizeError(f"'{method}' is not a 4-bit MatMul method ({', '.join(FOUR_BIT_METHODS)})")
    summaries = {name: large_matmuls(onnx.load(path, load_external_data=False))[1] for name, path in files.items()}
    weights = sum(s["weights"] for s in summaries.values())
    share = sum(s["large_matmul_weight_share"] * s["weights"] for s in summaries.values()) / max(weights, 1)
    if share < FOUR_BIT_MIN_SHARE:
        found = "; ".join(
            f"{name}: {s['weights']:,} weights, MatMul weights {', '.join(s['matmul_weight_shapes']) or 'none'}, "
            f"{s['gemm_nodes']} Gemm"
            for name, s in summaries.items()
        )
        raise OptimizeError(
            f"{method} refused: 4-bit weight-only quantisation ({_FOUR_BIT_OPS[method]}) rewrites only MatMuls with constant weights "
            f"of at least {FOUR_BIT_MIN_ELEMENTS:,} elements, and those hold {share:.1%} of this model's weights ({method} needs "
            f"{FOUR_BIT_MIN_SHARE:.0%} to pay). Found {found}. Convolutions and Gemm are left as they are by {method}: "
            "use int8-static or fp16 instead."
        )
    return summaries


def _small_matmuls(model: onnx.ModelProto, large: list[str]) -> list[str]:
    """The MatMuls a 4-bit quantizer must leave alone; unnamed ones are named first so they can be excluded."""
    for node in model.graph.node:
        if node.op_type == "MatMul" and not node.name:
            node.name = node.output[0]  # the name ``large_matmuls`` gives them
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in large]


def _to_q4(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(src)
    names, summary = large_matmuls(model)
    quantizer = MatMulNBitsQuantizer(model, block_size=Q4_BLOCK_SIZE, is_symmetric=True, nodes_to_exclude=_small_matmuls(model, names))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"block_size": Q4_BLOCK_SIZE, "symmetric": True, "quantized_matmuls": len(names), **summary}


def _to_bnb4(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

    model = onnx.load(src)
    names, summary = large_matmuls(model)
    quant_type = {"nf4": MatMulBnb4Quantizer.NF4, "fp4": MatMulBnb4Quantizer.FP4}[BNB4_QUANT_TYPE]
    quantizer = MatMulBnb4Quantizer(model, quant_type, BNB4_BLOCK_SIZE, nodes_to_exclude=_small_matmuls(model, names))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"quant_type": BNB4_QUANT_TYPE.upper(), "block_size": BNB4_BLOCK_SIZE, "quantized_matmuls": len(names), **summary}


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
    if method == "bnb4":
        return _to_bnb4(src, dst)
    if method == "ort":
        return _to_ort(src, dst)
    raise OptimizeError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
