"""Which library decodes request videos: PyAV against OpenCV's FFmpeg backend, measured.

``python -m facegraph.benchmarks.video_decode --out DIR`` makes clips in code (a pan across scikit-image's
pictures, 720p and 1080p, H.264 in MP4 and VP9 in WebM, a keyframe every 2 s), then decodes each
with each library in a fresh process per case, from memory (PyAV: a file object over the bytes;
OpenCV 5.1: ``cv2.VideoCapture(io.BytesIO(...), cv2.CAP_FFMPEG, [])``), and measures:

- full decode: every frame to RGB, frames per second of video decoded;
- sampled at 2 fps: decode-and-drop (every frame decoded, one in N converted) against seeking to
  each sampled timestamp;
- time to the first RGB frame from the bytes;
- the decoding process's peak RSS (VmHWM), beside an ``idle`` process that imported both
  libraries and read the clip but decoded nothing;
- reading from memory against reading the same clip from a file (``/dev/shm``; benchmark data,
  never a request's).

With ``--in-process`` it also runs the default config's detector and recognizer (one thread each)
on the H.264 clips sampled at 2 fps, as ``models.video_analysis`` chains them: decoding and
sampling, the models, and the tracker, timed apart. It writes ``video_decode.json`` and prints a table. Decoding runs on one thread unless
``--threads`` says more (a replica that decodes holds about half a core).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
CODECS = {"h264": ("libx264", "mp4"), "vp9": ("libvpx-vp9", "webm")}
SAMPLE_FPS = 2.0


def encode(frames, codec: str, fps: int = 25, options: dict | None = None, gop_s: float = 2.0, size: tuple[int, int] | None = None) -> bytes:
    """RGB uint8 frames -> a clip in memory: ``codec`` ``"h264"`` (MP4) or ``"vp9"`` (WebM), yuv420p.

    ``size`` (width, height) is needed only for a clip of no frames (its stream is declared, never fed).
    """
    import av

    frames = iter(frames)
    first = next(frames, None)
    if first is None and size is None:
        raise ValueError("a clip of no frames needs its size")
    width, height = size or (first.shape[1], first.shape[0])
    name, container_format = CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(name, rate=fps, options={"g": str(max(1, int(gop_s * fps))), **(options or {})})
        if codec == "vp9":  # libvpx's realtime mode: seconds, not minutes, for a 1080p test clip
            stream.options = {**stream.options, "deadline": "realtime", "cpu-used": "8"}
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()
        for frame in ([] if first is None else itertools.chain([first], frames)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def pan_frames(width: int, height: int, seconds: float, fps: int = 25):
    """A slow pan and zoom across a mosaic of scikit-image pictures: real texture for the codecs."""
    import cv2
    from skimage import data

    tiles = [data.astronaut(), data.coffee(), data.chelsea(), np.repeat(data.camera()[:, :, None], 3, axis=2)]
    tiles = [cv2.resize(t[:, :, :3], (512, 512)) for t in tiles]
    mosaic = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    mosaic = cv2.resize(mosaic, (width * 2, height * 2))
    for i in range(int(seconds * fps)):
        u = i / max(int(seconds * fps) - 1, 1)
        scale = 1.0 + 0.3 * u
        w, h = int(width * scale), int(height * scale)
        x, y = int(u * (mosaic.shape[1] - w)), int(u * (mosaic.shape[0] - h) / 2)
        yield cv2.resize(mosaic[y : y + h, x : x + w], (width, height), interpolation=cv2.INTER_AREA)


# ---- one case, run in its own process -------------------------------------------------------


def _targets(duration: float) -> list[float]:
    return [k / SAMPLE_FPS for k in range(int(duration * SAMPLE_FPS - 1e-9) + 1)]


def _walk(frames, mode: str, duration: float, started: float) -> tuple[int, int, float | None]:
    """Decode in order: every frame converted to RGB (``full``), the first only (``first``), or the
    first at or after each 1 / SAMPLE_FPS (``drop``). ``frames`` yields (time, convert)."""
    targets, k = _targets(duration), 0
    decoded = converted = 0
    first = None
    for t, convert in frames:
        decoded += 1
        if mode in ("full", "first") or (k < len(targets) and t + 0.01 >= targets[k]):
            convert()
            converted += 1
            k += 1
        if first is None:
            first = time.perf_counter() - started
        if mode == "first":
            break
    return decoded, converted, first


def _pyav(data: bytes | str, mode: str, threads: int) -> dict:
    import av

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    started = time.perf_counter()
    container = av.open(source)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = threads
    stream.codec_context.thread_type = "AUTO" if threads > 1 else "SLICE"
    tb = stream.time_base
    duration = float(stream.duration * tb) if stream.duration is not None else container.duration / av.time_base
    decoded = converted = 0
    first = None
    if mode in ("full", "first", "drop"):
        frames = ((float(f.pts * tb), lambda f=f: f.to_ndarray(format="rgb24")) for f in container.decode(stream))
        decoded, converted, first = _walk(frames, mode, duration, started)
    else:  # seek: to the keyframe before each target, then decode up to it
        for target in _targets(duration):
            container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                decoded += 1
                if float(frame.pts * tb) + 0.01 >= target:
                    frame.to_ndarray(format="rgb24")
                    converted += 1
                    break
            if first is None:
                first = time.perf_counter() - started
    container.close()
    return {"seconds": time.perf_counter() - started, "decoded": decoded, "converted": converted, "first_s": first, "duration_s": duration}


def _opencv(data: bytes | str, mode: str, threads: int) -> dict:
    import cv2

    # Keep the stream referenced for the capture's whole life: OpenCV 5.1 does not hold it, and a
    # temporary BytesIO crashes the process (SIGSEGV) when the capture is released.
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    started = time.perf_counter()
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if not capture.isOpened():
        raise RuntimeError("OpenCV could not open the clip")
    fps = capture.get(cv2.CAP_PROP_FPS)
    duration = capture.get(cv2.CAP_PROP_FRAME_COUNT) / fps
    decoded = converted = 0
    first = None
    if mode in ("full", "first", "drop"):

        def grabbed():
            while capture.grab():
                yield capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, lambda: cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)

        decoded, converted, first = _walk(grabbed(), mode, duration, started)
    else:
        for target in _targets(duration):
            capture.set(cv2.CAP_PROP_POS_MSEC, target * 1000.0)
            ok, bgr = capture.read()
            if ok:
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                decoded += 1
                converted += 1
            if first is None:
                first = time.perf_counter() - started
    capture.release()
    del source
    return {"seconds": time.perf_counter() - started, "decoded": decoded, "converted": converted, "first_s": first, "duration_s": duration}


def _peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM: unlike ``ru_maxrss`` it does not carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_case(case: dict) -> dict:
    """Decode one clip one way; the peak RSS is this whole process's (the ``idle`` case is the floor)."""
    path = Path(case["clip"])
    data: bytes | str = path.read_bytes() if case["source"] == "memory" else str(path)
    import av  # noqa: F401  (both libraries loaded in every case, so their import costs cancel out)
    import cv2  # noqa: F401

    cpu_before = _cpu_s()
    if case["mode"] == "idle":  # the baseline: both libraries imported and the clip read, nothing decoded
        result = {"seconds": 0.0, "decoded": 0, "converted": 0, "first_s": None, "duration_s": 0.0}
    else:
        result = (_pyav if case["library"] == "pyav" else _opencv)(data, case["mode"], case["threads"])
    result["peak_rss_mb"] = _peak_rss_kb() / 1024
    result["cpu_s"] = _cpu_s() - cpu_before
    return result


def _cpu_s() -> float:
    """CPU seconds of all this process's threads (a decoder that runs threads shows more than its wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the driver ------------------------------------------------------------------------------


def _run_isolated(case: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "facegraph.benchmarks.video_decode", "--case", json.dumps(case)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip()[-300:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(folder: Path, seconds: float, threads: tuple[int, ...], repeats: int) -> dict:
    clips = {}
    for size, (width, height) in SIZES.items():
        frames = list(pan_frames(width, height, seconds))
        for codec in CODECS:
            started = time.perf_counter()
            data = encode(frames, codec)
            path = folder / f"{codec}-{size}.{CODECS[codec][1]}"
            path.write_bytes(data)
            clips[f"{codec}-{size}"] = {"path": str(path), "bytes": len(data), "frames": len(frames), "encode_s": round(time.perf_counter() - started, 2)}
    rows = []
    plan = [("idle", 1, "memory")] + [(m, t, "memory") for m in ("full",) for t in threads] + [(m, 1, "memory") for m in ("drop", "seek", "first")] + [("full", 1, "file")]
    for clip, meta in clips.items():
        for mode, nthreads, source in plan:
            for library in ("pyav", "opencv"):
                case = {"clip": meta["path"], "library": library, "mode": mode, "threads": nthreads, "source": source}
                runs = [_run_isolated(case) for _ in range(repeats)]
                good = [r for r in runs if "error" not in r]
                row = {"clip": clip, "library": library, "mode": mode, "threads": nthreads, "source": source}
                if not good:
                    row["error"] = runs[0]["error"]
                else:
                    best = min(good, key=lambda r: r["seconds"])
                    row.update(
                        seconds=round(best["seconds"], 4), cpu_s=round(best["cpu_s"], 4), decoded=best["decoded"], converted=best["converted"],
                        video_fps=round(best["decoded"] / best["seconds"], 1) if mode == "full" else None,
                        realtime_x=round(best["duration_s"] / best["seconds"], 1) if best["seconds"] else None,
                        first_frame_ms=round(best["first_s"] * 1000, 1) if best["first_s"] is not None else None,
                        peak_rss_mb=round(max(r["peak_rss_mb"] for r in good), 1),
                    )  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"clips": clips, "rows": rows}


def table(result: dict) -> str:
    lines = ["| clip | library | mode | threads | source | seconds | CPU seconds | frames decoded / converted | video frames/s | x real time | first frame ms | peak RSS MB |", "|" + " --- |" * 12]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['clip']} | {r['library']} | {r['mode']} | {r['threads']} | {r['source']} | error: {r['error'][:80]} | | | | | | |")
            continue
        lines.append(
            f"| {r['clip']} | {r['library']} | {r['mode']} | {r['threads']} | {r['source']} | {r['seconds']} | {r['cpu_s']} | {r['decoded']} / {r['converted']} "
            f"| {r['video_fps'] or ''} | {r['realtime_x']} | {r['first_frame_ms']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines)


def in_process(seconds: float, repeats: int) -> list[dict]:
    """The default config's models in this process on a 1080p pan clip sampled at 2 fps: where the time goes."""
    from facegraph.graph.config import FacegraphConfig, default_cache_dir
    from facegraph.models.registry import load_model
    from facegraph.models.tracking import track_faces
    from facegraph.models.video import VideoLimits, probe, sample
    from facegraph.models.video_analysis import VideoModels, frames_faces

    config = FacegraphConfig()
    load = lambda stage: load_model(stage.model.model_copy(update={"device": "cpu"}), cpu_threads=1, cache_dir=default_cache_dir()).adapter  # noqa: E731
    models = VideoModels(load(config.detector), load(config.recognizer))
    rows = []
    for size, (width, height) in SIZES.items():
        data = encode(pan_frames(width, height, seconds), "h264")
        for _ in range(repeats):
            cpu, wall = time.process_time(), time.perf_counter()
            frames = list(sample(data, probe(data), limits=VideoLimits()))
            cpu_decoded, decoded = time.process_time(), time.perf_counter()
            found = list(frames_faces(frames, models, config.ingress.max_pixels))
            cpu_analysed, analysed = time.process_time(), time.perf_counter()
            tracks = track_faces(found, None, models.recognizer.metric, models.recognizer.match_threshold)
            done = time.perf_counter()
            rows.append({
                "clip": f"h264-{size}", "sampled_frames": len(frames), "faces": sum(len(f.faces) for f in found), "tracks": len(tracks),
                "decode_s": round(decoded - wall, 3), "decode_cpu_s": round(cpu_decoded - cpu, 3),
                "models_s": round(analysed - decoded, 3), "models_cpu_s": round(cpu_analysed - cpu_decoded, 3),
                "track_ms": round((done - analysed) * 1000, 2), "sampled_frames_per_s": round(len(frames) / (done - wall), 1),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for video_decode.json")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length (25 fps)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decoder threads for the full-decode rows")
    parser.add_argument("--repeats", type=int, default=2, help="runs per case; the fastest is kept")
    parser.add_argument("--in-process", action="store_true", help="also time the default models in process on the sampled frames (needs `facegraph models build`)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    if args.out is None:
        parser.error("--out is required")
    import av
    import cv2

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as folder:
        load_before = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None
        result = measure(Path(folder), args.seconds, tuple(args.threads), args.repeats)
        if args.in_process:
            result["in_process"] = in_process(args.seconds, args.repeats)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
        "pyav": av.__version__, "ffmpeg_in_pyav": av.library_versions.get("libavcodec"), "opencv": cv2.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "video_decode.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
