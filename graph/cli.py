"""The ``facegraph`` command line: doctor, models, serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _doctor(args) -> int:
    from models.doctor import diagnose, render

    report = diagnose(args.device)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegraph", description="Face analysis served as a Ray Serve graph.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="what ONNX Runtime really runs on here, and how to fix what is missing")
    doctor.add_argument("--device", choices=["auto", "cuda", "tensorrt", "cpu"], default="auto", help="policy to check")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
