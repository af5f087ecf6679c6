"""Summaries of py-spy ``raw`` (collapsed stack) profiles: where each process spends its samples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TOP = 12
# Samples per second that benchmarks.graph_bench.Profiler asks py-spy for.
RATE = 50
# Frames every thread sits under; they say nothing about where the time goes.
_GENERIC = ("(threading.py)", "(worker.py)", "(default_worker.py)", "<module>")


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1] if where else ""
    return f"{name} ({file})" if file else name


def summarise_file(path: Path, rate: int = RATE) -> dict:
    """Busy samples, and the frames that hold the most of them (self and inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("thread (")]
        total += n
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            if not frame.endswith(_GENERIC):
                inclusive[frame] += n
    return {
        "samples": total,
        # py-spy records active (non-idle) samples only, one per thread per tick.
        "busy_thread_s": round(total / rate, 2),
        "top_self": [{"frame": f, "share": round(n / total, 3)} for f, n in own.most_common(TOP)],
        "top_inclusive": [{"frame": f, "share": round(n / total, 3)} for f, n in inclusive.most_common(TOP)],
    }


def summarise(directory: Path) -> dict:
    """One summary per ``ROLE.txt`` profile in ``directory``."""
    if not directory.is_dir():
        return {}
    return {path.stem: summarise_file(path) for path in sorted(directory.glob("*.txt")) if path.stat().st_size}
