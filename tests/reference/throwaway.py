"""The command line every reference recorder shares: record outside (``outer``), compute inside a throwaway virtualenv (``inner``).

The recorder runs itself again inside the virtualenv with ``--inner FEED RESULT``; only
numpy and the reference package are importable there, so this module imports nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def cli(doc: str, venv: str, what: str, out: Path, outer: Callable[[argparse.Namespace], None], inner: Callable[[Path, Path], None]) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--venv", default=venv, help=f"throwaway virtualenv for {what}")
    parser.add_argument("--out", default=str(out))
    parser.add_argument("--inner", nargs=2, metavar=("FEED", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(Path(args.inner[0]), Path(args.inner[1]))
    else:
        outer(args)
