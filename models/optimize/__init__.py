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
* ``bnb4``: 4-bit NormalFloat weight-only MatMul, bitsandbytes' format
  (``MatMulBnb4Quantizer``: NF4, blocks of 64); refused where q4 is, for the same reason.
* ``ort``: the graph as ONNX Runtime optimises it for the CPU provider, saved offline.

Every variant runs beside its source on the same inputs and the differences go into
a manifest next to the variant: boxes and scores for detectors, embeddings and
same/different decisions on picture pairs for recognizers, probabilities for
classifiers, plus file size and CPU speed measured in the same run. A variant that
falls outside its role's floor (:data:`FLOORS`) is refused and nothing is written,
unless ``force`` is given.
"""

from facegraph.models.optimize.conversion import fp16_model
from facegraph.models.optimize.floors import FLOORS, METHODS, AccuracyFloorError, Floor, OptimizeError, floors_for
from facegraph.models.optimize.job import OptimizeResult, optimize
from facegraph.models.optimize.layouts import resolve
from facegraph.models.optimize.pictures import calibration_pictures, measurement_pictures, moved_about
from facegraph.models.optimize.report import format_table

__all__ = [
    "FLOORS", "METHODS", "AccuracyFloorError", "Floor", "OptimizeError", "OptimizeResult", "calibration_pictures",
    "floors_for", "format_table", "fp16_model", "measurement_pictures", "moved_about", "optimize", "resolve",
]
