"""The methods, the accuracy floor each role's variant must hold, and the errors of an optimise job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal


from facegraph.models.errors import FacegraphError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facegraph.models.optimize.job import OptimizeResult

logger = logging.getLogger(__name__)


METHODS: tuple[str, ...] = ("fp16", "int8", "int8-static", "q4", "bnb4", "ort")
DESCRIPTIONS = {
    "fp16": "float16 weights and activations, float32 inputs/outputs (onnxconverter-common)",
    "int8": "dynamic int8: int8 weights, activations quantised at run time (onnxruntime quantize_dynamic)",
    "int8-static": "static int8, QDQ, per-channel weights, calibrated activations (onnxruntime quantize_static)",
    "q4": "4-bit weight-only MatMul, blocks of 32 (onnxruntime MatMulNBits)",
    "bnb4": "4-bit NormalFloat (NF4) weight-only MatMul, blocks of 64 (onnxruntime MatMulBnb4)",
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
    # bnb4 is q4's kind of change (4-bit weight-only MatMul, other ops untouched) and is held to q4's floors.
    return {"fp16": fp16, "int8": int8, "int8-static": int8, "q4": q4, "bnb4": q4, "ort": ort_}


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
# The 4-bit weight-only methods only pay where MatMul weights are most of the model: each
# must have at least this many elements and together they must hold this share of all weights.
FOUR_BIT_METHODS = ("q4", "bnb4")
FOUR_BIT_MIN_ELEMENTS = 1 << 16
FOUR_BIT_MIN_SHARE = 0.5
Q4_BLOCK_SIZE = 32
# bnb4: ONNX Runtime's defaults, NF4 in blocks of 64 (what bitsandbytes' Linear4bit uses).
# Measured on five ViT-shaped classifiers (benchmarks/gpu/heavy.py: width 256 with seeds
# 2-5, width 384) over the measurement face crops: NF4's levels, quantiles of a normal
# distribution as transformer weights are, moved fake probabilities by 0.02-0.09 on average
# where FP4 moved them by 0.03-0.33 (FP4 better on one model of five); blocks of 32 were
# better than 64 on two models and worse on three, for 5% more bytes: no reason to leave
# the default.
BNB4_QUANT_TYPE = "nf4"
BNB4_BLOCK_SIZE = 64


class OptimizeError(FacegraphError):
    """A variant cannot be made for this model (unknown model, unsupported method, nothing to quantise)."""

    code = "optimize_error"


class AccuracyFloorError(OptimizeError):
    """The variant was made and measured, but falls outside its floor; nothing was written."""

    code = "accuracy_floor"

    def __init__(self, message: str, result: "OptimizeResult"):
        super().__init__(message)
        self.result = result

def floors_for(role: str) -> list[Floor]:
    return [f for f in FLOORS if f.role == role]
