"""The rows of a bulk job: one per face, and one per picture with no face or an error.

Every stage reads and writes pyarrow tables with these fields, so each output file has the same
schema whatever its pictures held. Stage timings split a batch's time evenly over its rows: a
column's sum is that stage's busy time.
"""

from __future__ import annotations

import pyarrow as pa

from facegraph.graph.core.stages import MODEL_FIELDS

# Which model answered (``graph.core.stages.answered_by``); a detector's landmark names have a column of their own.
MODEL = pa.struct([(name, pa.string()) for name in MODEL_FIELDS])

PICTURE = [("path", pa.string()), ("sha256", pa.string()), ("width", pa.int32()), ("height", pa.int32())]
ERROR = [("error_code", pa.string()), ("error", pa.string())]

# After reading: one row per picture. ``data`` is the file's bytes when the detector decodes them (as
# the Serve detector does); ``pixels`` the RGB image, row-major (H, W, 3), when reading tasks decoded it.
READ = pa.schema(PICTURE + [("data", pa.large_binary()), ("pixels", pa.large_binary())] + ERROR + [("decode_ms", pa.float32())])

# What DEST holds.
OUTPUT = pa.schema(
    PICTURE
    + [("status", pa.string())]  # "face", "no_face" or "error"
    + ERROR
    + [
        ("faces", pa.int32()),  # faces found in the picture
        ("face", pa.int32()),  # this face's index, best scored first
        ("bbox", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 picture pixels
        ("score", pa.float32()),
        ("landmarks", pa.list_(pa.list_(pa.float32(), 2))),  # rows named by the detector's model
        ("landmark_names", pa.list_(pa.string())),
        ("embedding", pa.list_(pa.float32())),
        ("embedding_space", pa.string()),
        ("fake_probability", pa.float32()),
        ("deepfake_label", pa.string()),
        ("detector_model", MODEL),
        ("recognizer_model", MODEL),
        ("deepfake_model", MODEL),
        ("subject", pa.string()),  # --enroll-by-folder: the folder name
        ("subject_id", pa.string()),
        ("enroll_status", pa.string()),  # "enrolled", "no_face", "several_faces", "low_quality", "error"
        ("decode_ms", pa.float32()),
        ("detect_ms", pa.float32()),
        ("recognizer_ms", pa.float32()),
        ("deepfake_ms", pa.float32()),
        ("enroll_ms", pa.float32()),
    ]
)

# Between the detector and the branches: each face row carries the crops of the configured branches
# (0 or 1, raw uint8 HxWx3), and each branch drops its own column once used.
CROP_COLUMNS = {"recognizer": "recognizer_crop", "deepfake": "deepfake_crop"}


def staged_schema(branches) -> pa.Schema:
    """The rows the detector hands to ``branches``: the output's fields and a crop column per branch."""
    return pa.schema(list(OUTPUT) + [(CROP_COLUMNS[b], pa.binary()) for b in branches])


def replace_columns(table: pa.Table, values: dict[str, list]) -> pa.Table:
    """``table`` with some columns replaced by python values of their own types."""
    for name, column in values.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(name), pa.array(column, type=table.schema.field(name).type))
    return table


def split_ms(total_ms: float, rows: int) -> list[float]:
    """A batch's time over its rows (its sum is the batch's time)."""
    return [total_ms / rows] * rows if rows else []
