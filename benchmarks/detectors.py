"""Every detector of the pack, and the settings that matter, on marked real photos and composed pictures.

For each candidate: the marked faces it finds and misses and its false detections
(``../shared/photos`` and the scikit-image pictures, :mod:`benchmarks.photos`), the
faces it finds of those pasted into the benchmark's composed pictures, and its time
per picture at 1 and 2 ONNX Runtime threads on small (longer side up to 1024 px) and
large pictures. ``facegraph bench`` runs it; ``facegraph bench-detectors`` alone
(no Ray, no network needed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmarks.photos import Labelled, framed_photos, load_photos, match, skimage_pictures
from benchmarks.pictures import Picture, picture_mix
from graph.config import FacegraphConfig, default_cache_dir
from models.registry import ModelSpec, load_model

SMALL_SIDE = 1024
# The reach probe: group-t1's six faces (about 100 px wide) scaled to these widths, in a 3840 x 2160 picture.
REACH_WIDTH = 3840
REACH_FACES_PX = (400, 300, 240, 200, 160, 130, 100, 80, 60, 50, 40, 30, 24, 20)


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    settings: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> ModelSpec:
        return ModelSpec(family=self.family, pack=self.family, device="cpu", settings=self.settings)


# Every setting that matters is spelled out: a candidate must not change when a family's default does.
CANDIDATES = (
    Candidate("mtcnn, full resolution", "mtcnn", {"max_side": None}),
    Candidate("mtcnn, max_side 1920 (its default)", "mtcnn", {"max_side": 1920}),
    Candidate("mtcnn, max_side 1280", "mtcnn", {"max_side": 1280}),
    Candidate("mtcnn, max_side 960", "mtcnn", {"max_side": 960}),
    Candidate("mtcnn, max_side 640", "mtcnn", {"max_side": 640}),
    Candidate("blazeface, score 0.5, whole picture", "blazeface", {"score_threshold": 0.5, "tile_above": None}),
    Candidate("blazeface, score 0.4, whole picture", "blazeface", {"score_threshold": 0.4, "tile_above": None}),
    Candidate("blazeface, score 0.4, 2x2 tiles above 1280 px", "blazeface", {"score_threshold": 0.4, "tile_above": 1280, "tiles": 2}),
    Candidate("blazeface, score 0.4, 3x3 tiles above 1280 px (its default)", "blazeface", {"score_threshold": 0.4, "tile_above": 1280, "tiles": 3}),
    Candidate("blazeface, score 0.5, 3x3 tiles above 1280 px", "blazeface", {"score_threshold": 0.5, "tile_above": 1280, "tiles": 3}),
    Candidate("blazeface, score 0.4, 2x2 tiles above 640 px", "blazeface", {"score_threshold": 0.4, "tile_above": 640, "tiles": 2}),
)
QUICK_CANDIDATES = (CANDIDATES[0], CANDIDATES[8])


def _timed(detector, images: Sequence, repeats: int) -> float | None:
    """Mean ms per picture, one picture per call, after one warm-up pass."""
    if not images:
        return None
    for image in images:
        detector.detect([image])
    started = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            detector.detect([image])
    return round((time.perf_counter() - started) * 1000 / (repeats * len(images)), 2)


def evaluate(
    candidate: Candidate, labelled: Sequence[Labelled], composed: Sequence[Picture], cache: Path, repeats: int = 1, threads: Sequence[int] = (1, 2)
) -> dict:
    """One candidate's faces found, misses, false detections and ms per picture."""
    spec = candidate.spec()
    detector = load_model(spec, cpu_threads=1, cache_dir=cache, role="detector").adapter
    marked = found = false = 0
    misses, extras = [], []
    labelled_images = []
    for picture in labelled:
        image = picture.rgb()
        labelled_images.append(image)
        (faces,) = detector.detect([image])
        hit, wrong = match(picture.faces, [f.bbox for f in faces])
        marked, found, false = marked + len(picture.faces), found + hit, false + wrong
        if hit < len(picture.faces):
            misses.append(f"{picture.name}: {len(picture.faces) - hit}")
        if wrong:
            extras.append(f"{picture.name}: {wrong}")
    pasted = recalled = composed_found = 0
    composed_images = []
    for picture in composed:
        image = picture.rgb()
        composed_images.append(image)
        (faces,) = detector.detect([image])
        # Pasted boxes are the source pictures' rough face boxes, scaled: matched as the benchmark's
        # own picture check does (IoU >= 0.3).
        hit, _ = match(picture.boxes, [f.bbox for f in faces], threshold=0.3)
        pasted, recalled, composed_found = pasted + len(picture.boxes), recalled + hit, composed_found + len(faces)
    images = [im for im in labelled_images + composed_images if min(im.shape[:2]) >= 128]
    small = [im for im in images if max(im.shape[:2]) <= SMALL_SIDE]
    large = [im for im in images if max(im.shape[:2]) > SMALL_SIDE]
    probe = reach(detector, labelled)
    timing = {}
    for n in threads:
        timed = load_model(spec, cpu_threads=n, cache_dir=cache, role="detector").adapter
        timing[f"ms_small_{n}t"] = _timed(timed, small, repeats)
        timing[f"ms_large_{n}t"] = _timed(timed, large, repeats)
    return {
        "name": candidate.name,
        "family": candidate.family,
        "settings": candidate.settings,
        "marked": marked,
        "found": found,
        "lost": marked - found,
        "false": false,
        "misses": misses,
        "false_detections": extras,
        "composed_pasted": pasted,
        "composed_found": recalled,
        "composed_detections": composed_found,
        "reach": probe,
        "pictures_small": len(small),
        "pictures_large": len(large),
        **timing,
    }


def reach(detector, photos: Sequence[Labelled]) -> dict | None:
    """The smallest faces a detector still finds, all six, when group-t1 sits scaled in a 3840 px picture."""
    import cv2
    import numpy as np

    group = next((p for p in photos if p.name == "group-t1.jpg" and p.frame is None), None)
    if group is None:
        return None
    image = group.rgb()
    width = float(np.mean([x2 - x1 for x1, _, x2, _ in group.faces]))
    smallest, ms, largest = None, None, None
    for face_px in REACH_FACES_PX:
        scale = face_px / width
        scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        height = REACH_WIDTH * 9 // 16
        if scaled.shape[1] > REACH_WIDTH or scaled.shape[0] > height:
            continue
        largest = largest or face_px
        canvas = np.full((height, REACH_WIDTH, 3), 120, np.uint8)
        canvas[: scaled.shape[0], : scaled.shape[1]] = scaled
        started = time.perf_counter()
        (faces,) = detector.detect([canvas])
        ms = round((time.perf_counter() - started) * 1000, 1)
        found, _ = match([[v * scale for v in box] for box in group.faces], [f.bbox for f in faces])
        if found < len(group.faces):
            break
        smallest = face_px
    return {"picture_px": REACH_WIDTH, "smallest_face_px": smallest, "largest_tried_px": largest, "ms_last": ms}


def choose(rows: Sequence[dict], reference: str = CANDIDATES[0].name) -> str | None:
    """The cheapest candidate that loses no marked face and adds no false detection to the reference's.

    Cost: the mean of its ms per picture on small and large pictures at 1 thread.
    """
    base = next(r for r in rows if r["name"] == reference)
    fit = [r for r in rows if r["lost"] <= base["lost"] and r["false"] <= base["false"]]

    def cost(row: dict) -> float:
        return sum(v for v in (row.get("ms_small_1t"), row.get("ms_large_1t")) if v is not None)

    return min(fit, key=cost)["name"] if fit else None


def bench_detectors(photos: Path | None = None, quick: bool = False, progress: bool = True, cache: Path | None = None) -> dict:
    """The candidate table: every candidate on the same pictures, one after another."""
    found, skipped = load_photos(photos)
    labelled = found + framed_photos(found) + skimage_pictures()
    composed = picture_mix(4 if quick else 16)
    cache = cache or FacegraphConfig().cache_dir() or default_cache_dir()
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    rows = []
    for candidate in candidates:
        if progress:
            print(f"[bench] detector candidate: {candidate.name}", file=sys.stderr, flush=True)
        rows.append(evaluate(candidate, labelled, composed, cache, repeats=1 if quick else 2))
    return {
        "photos": [p.name for p in found],
        "photos_skipped": skipped,
        "pictures_labelled": len(labelled),
        "composed_pictures": len(composed),
        "small_side_px": SMALL_SIDE,
        "candidates": rows,
        "cheapest_keeping_every_face": choose(rows),
    }


def _reach_cell(probe: dict | None) -> str | None:
    if not probe:
        return None
    return str(probe["smallest_face_px"]) if probe["smallest_face_px"] else f"over {probe['largest_tried_px']}"


def table(result: dict) -> list[list]:
    """Rows for report.md and the README."""
    return [
        [
            r["name"],
            f"{r['found']}/{r['marked']}",
            r["false"],
            f"{r['composed_found']}/{r['composed_pasted']}",
            r.get("ms_small_1t"),
            r.get("ms_small_2t"),
            r.get("ms_large_1t"),
            r.get("ms_large_2t"),
            _reach_cell(r.get("reach")),
        ]
        for r in result["candidates"]
    ]


TABLE_HEADER = [
    "candidate",
    "marked faces found",
    "false detections",
    "composed pictures: pasted faces found",
    "ms small, 1 thread",
    "ms small, 2 threads",
    "ms large, 1 thread",
    "ms large, 2 threads",
    f"smallest faces found in a {REACH_WIDTH} px picture (px)",
]


def main(args) -> int:
    """``facegraph bench-detectors``."""
    from benchmarks.cli import require_bench_extra
    from benchmarks.report import _table

    require_bench_extra("facegraph bench-detectors")

    result = bench_detectors(Path(args.photos) if args.photos else None, quick=args.quick)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n".join(_table(TABLE_HEADER, table(result))))
    if result["photos_skipped"]:
        print("left out: " + "; ".join(result["photos_skipped"]))
    print(f"cheapest candidate keeping every face the full-resolution MTCNN finds, adding no false one: {result['cheapest_keeping_every_face']}")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("bench-detectors", help="every pack detector on marked real photos and composed pictures: faces, misses, ms")
    parser.add_argument("--photos", help="folder of the marked photos (default: ../shared/photos beside the repository)")
    parser.add_argument("--quick", action="store_true", help="three candidates, fewer pictures")
    parser.add_argument("--out", help="write the result as JSON here")
    parser.set_defaults(func=main)
    return parser
