"""``facegraph bench``: the command-line entry of the benchmarks (the work is in benchmarks/run.py)."""

from __future__ import annotations

import argparse

from facegraph.benchmarks.machine import NAMESPACE_HINT
from facegraph.models.extras import require


def _bench(args) -> int:
    require("facegraph bench", "bench")
    from facegraph.benchmarks.run import main

    return main(args)


def serving_modes(text: str) -> tuple[str, ...]:
    from facegraph.graph.serving import MODES

    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"give distinct serving modes among {', '.join(MODES)}")
    return modes


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """The benchmark commands, added to ``facegraph``'s through the ``facegraph.commands`` entry point."""
    bench = sub.add_parser(
        "bench",
        help="measure the graph against in-process ONNX Runtime and a service-per-model chain",
        description=(
            "Per-model latency and batch curves, the in-process pipeline, a service-per-model chain and the "
            "graph over HTTP and handles, on the same models and pictures. Writes results.json, report.md and "
            "PNG plots. It starts Ray and loopback HTTP services, so it refuses to run while a non-loopback "
            "network interface is up: run it inside a private network namespace, as root."
        ),
        epilog=f"example:\n  {NAMESPACE_HINT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--quick", action="store_true", help="a short run (under a minute) for shape and sanity, not timings")
    bench.add_argument("--out", default="bench-out", help="directory for results.json, report.md and plots")
    bench.add_argument("--config", help="a Serve config YAML (default: the built-in default config)")
    bench.add_argument("--profile", action="store_true", help="py-spy the proxy, ingress and replicas during the 16-client HTTP run")
    bench.add_argument(
        "--baseline",
        help="a second Serve config YAML measured on the same pictures (its detector, in-process, graph at 16 clients), "
        "e.g. benchmarks/mtcnn-full-resolution.yaml; results.json's ratios.vs_baseline compares the two",
    )
    bench.add_argument("--photos", help="folder of the marked real photos (default: ../shared/photos beside the repository)")
    bench.add_argument(
        "--serving",
        type=serving_modes,
        default=None,
        help="serving modes, comma-separated (fast, throughput, haproxy, plain): the first is measured in full, the others at 1 "
        "and 16 clients in every round (default: fast alone)",
    )
    bench.add_argument("--rounds", type=int, default=None, help="rounds that alternate the systems; the headline ratios are their median (default 3; 1 with --quick)")
    bench.add_argument(
        "--no-detectors", action="store_true", help="leave out the detector table (14 minutes on 2 loaded cores; `facegraph bench-detectors` runs it alone)"
    )
    bench.set_defaults(func=_bench)
    from facegraph.benchmarks.batch_bench import add_parser as add_batch_parser
    from facegraph.benchmarks.detectors import add_parser as add_detectors_parser
    from facegraph.benchmarks.gallery_ann import add_parser as add_gallery_ann_parser
    from facegraph.benchmarks.gallery_bench import add_parser as add_gallery_parser

    add_gallery_parser(sub)
    add_gallery_ann_parser(sub)
    add_detectors_parser(sub)
    add_batch_parser(sub)
    return bench
