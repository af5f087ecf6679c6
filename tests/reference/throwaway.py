"""The command line every reference recorder shares: record outside (``outer``), compute inside a throwaway virtualenv (``inner``).

The recorder runs itself again inside the virtualenv with ``--inner FEED RESULT``; only
numpy and the reference package are importable there, so this module imports nothing else.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence


def ensure_venv(venv: Path, *installs: Sequence[str]) -> Path:
    """The virtualenv's python, the venv made when missing; each of ``installs`` is one ``pip install`` argument list, run in order."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for args in installs:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)
    return python


def cli(
    doc: str,
    venv: str,
    what: str,
    out: Path,
    outer: Callable[[argparse.Namespace], None],
    inner: Callable[[Path, Path], None],
    store_inputs: Callable[[Path], None] | None = None,
) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--venv", default=venv, help=f"throwaway virtualenv for {what}")
    parser.add_argument("--out", default=str(out))
    parser.add_argument("--inner", nargs=2, metavar=("FEED", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--store-inputs",
        action="store_true",
        help="add the input pictures rebuilt now to the recorded file, only if they are the ones it was recorded on",
    )
    args = parser.parse_args()
    if args.inner:
        inner(Path(args.inner[0]), Path(args.inner[1]))
    elif args.store_inputs:
        if store_inputs is None:
            parser.error(f"{what}: this recorder's inputs need no storing")
        store_inputs(Path(args.out))
    else:
        outer(args)
