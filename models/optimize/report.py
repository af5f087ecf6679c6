"""The table ``facegraph optimize`` and ``facegraph models list`` print from variant manifests."""

from __future__ import annotations

import logging
from typing import Sequence


from facegraph.models.optimize.floors import floors_for

logger = logging.getLogger(__name__)


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
