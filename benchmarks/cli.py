"""``facegraph bench``: the command-line entry of the benchmarks (filled in by benchmarks/run.py)."""

from __future__ import annotations

import argparse


def _bench(args) -> int:
    from benchmarks.run import main

    return main(args)


def add_bench_parser(sub) -> argparse.ArgumentParser:
    bench = sub.add_parser("bench", help="measure the graph against in-process ONNX Runtime and a service-per-model chain")
    bench.add_argument("--quick", action="store_true", help="a short run (under a minute) for shape and sanity, not timings")
    bench.add_argument("--out", default="bench-out", help="directory for results.json, report.md and plots")
    bench.add_argument("--config", help="a Serve config YAML (default: the built-in default config)")
    bench.set_defaults(func=_bench)
    return bench
