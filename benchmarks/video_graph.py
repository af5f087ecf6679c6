"""Clips through the served graph against the same clips in one process, in one run.

    RAY_USAGE_STATS_ENABLED=0 unshare -n -p -f --mount-proc sh -c 'ip link set lo up && \
        .venv/bin/python -m facegraph.benchmarks.video_graph --out DIR'

The default config (CenterFace, dlib ResNet) on H.264 pan clips made in code (scikit-image's
pictures, ``benchmarks.video_decode.pan_frames``) at 720p and 1080p, sampled at 2 fps. Rounds
alternate the in-process pipeline (``models.video_analysis``: decode, detect, embed, track on this
process's one thread per model) and the graph over HTTP (``POST /v1/analyze/video``, NDJSON: the
time to the first progress line, and to the answer), one clip at a time and then two at once. Per
round it reads the detector replicas' peak memory (``VmHWM`` from /proc: the process that decodes).
Sampled frames a second are the headline; the ratio graph / in-process is computed within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from facegraph.benchmarks.machine import NAMESPACE_HINT, machine_info, require_loopback_only
from facegraph.benchmarks.video_decode import encode, pan_frames

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def clips(seconds: float) -> dict[str, bytes]:
    return {name: encode(pan_frames(w, h, seconds), "h264") for name, (w, h) in SIZES.items()}


def in_process(data: bytes, models, max_pixels: int) -> dict:
    """One clip through decode, the models and the tracker in this process."""
    from facegraph.models.video import probe, sample
    from facegraph.models.video_analysis import analyze_frames

    started = time.perf_counter()
    found, tracks = analyze_frames(sample(data, probe(data)), models, max_pixels)
    seconds = time.perf_counter() - started
    return {"frames": len(found), "tracks": len(tracks), "seconds": round(seconds, 3), "frames_per_s": round(len(found) / seconds, 2)}


async def over_http(base_url: str, data: bytes) -> dict:
    """One clip over HTTP as an NDJSON stream: time to the first progress line and to the answer."""
    import aiohttp

    started = time.perf_counter()
    first = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        headers = {"content-type": "video/mp4", "accept": "application/x-ndjson"}
        async with session.post(base_url + "/v1/analyze/video", data=data, headers=headers) as resp:
            async for line in resp.content:
                first = first or time.perf_counter()
                event = json.loads(line)
    if "answer" not in event:
        raise RuntimeError(f"the graph refused the clip: {event}")
    seconds = time.perf_counter() - started
    frames = event["answer"]["sampling"]["frames"]
    return {
        "frames": frames, "tracks": len(event["answer"]["tracks"]), "seconds": round(seconds, 3),
        "first_progress_s": round(first - started, 3), "frames_per_s": round(frames / seconds, 2),
    }  # fmt: skip


async def two_at_once(base_url: str, data: bytes) -> dict:
    """Two clips sent together (the two detector replicas each take one): sampled frames a second over both."""
    started = time.perf_counter()
    runs = await asyncio.gather(over_http(base_url, data), over_http(base_url, data))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "frames_per_s": round(sum(r["frames"] for r in runs) / seconds, 2)}


def detector_peak_mb() -> list[float]:
    """Peak resident memory of each detector replica (the processes that decode), from /proc."""
    from facegraph.benchmarks.procstat import snapshot

    peaks = []
    for pid, (role, _) in snapshot().items():
        if role == "Detector":
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
    return sorted(peaks)


def one_round(number: int, data: dict[str, bytes], models, graph_url: str, max_pixels: int) -> dict:
    entry: dict = {"round": number, "load": open("/proc/loadavg").read().split()[:3], "clips": {}}
    for name, clip in data.items():
        local = in_process(clip, models, max_pixels)
        graph = asyncio.run(over_http(graph_url, clip))
        both = asyncio.run(two_at_once(graph_url, clip))
        entry["clips"][name] = {
            "in_process": local, "graph": graph, "graph_two_clips": both,
            "graph_vs_in_process": round(graph["frames_per_s"] / local["frames_per_s"], 3),
            "two_clips_vs_in_process": round(both["frames_per_s"] / local["frames_per_s"], 3),
        }  # fmt: skip
        print(json.dumps({"round": number, "clip": name, **entry["clips"][name]}), flush=True)
    entry["detector_peak_rss_mb"] = detector_peak_mb()
    return entry


def run(out: Path, seconds: float, rounds: int) -> dict:
    from facegraph.benchmarks.graph_bench import GraphBench
    from facegraph.graph.config import FacegraphConfig, default_cache_dir
    from facegraph.models.registry import load_model
    from facegraph.models.video_analysis import VideoModels

    require_loopback_only()
    config = FacegraphConfig()
    load = lambda stage: load_model(stage.model.model_copy(update={"device": "cpu"}), cpu_threads=1, cache_dir=default_cache_dir()).adapter  # noqa: E731
    models = VideoModels(load(config.detector), load(config.recognizer))
    data = clips(seconds)
    graph = GraphBench(config, [])
    graph.start()
    try:
        asyncio.run(over_http(graph.base_url, data["720p"]))  # replicas build their handles and caches first
        per_round = [one_round(k, data, models, graph.base_url, config.ingress.max_pixels) for k in range(1, rounds + 1)]
    finally:
        graph.stop()
    summary = {
        name: {key: statistics.median(r["clips"][name][key] for r in per_round) for key in ("graph_vs_in_process", "two_clips_vs_in_process")}
        | {"first_progress_s": statistics.median(r["clips"][name]["graph"]["first_progress_s"] for r in per_round)}
        for name in data
    }
    results = {"machine": machine_info().to_json(), "seconds": seconds, "sample_fps": 2, "medians": summary, "rounds": per_round}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=f"example:\n  {NAMESPACE_HINT}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip (25 fps)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(Path(args.out), args.seconds, args.rounds)
    print(json.dumps(results["medians"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
