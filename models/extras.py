"""Optional dependencies by extra: what a serving install leaves out, and the message that says how to add it."""

from __future__ import annotations

import importlib.util

# Import names each extra of pyproject.toml brings.
EXTRAS: dict[str, tuple[str, ...]] = {
    # Building the default pack and making variants: converters a serving process never imports.
    "convert": ("tflite", "onnxconverter_common", "onnx_ir"),
    # Benchmarks, and the measurement pictures of `facegraph optimize` (scikit-image's sample faces).
    "bench": ("matplotlib", "aiohttp", "uvicorn", "skimage"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` this environment lacks."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(command: str, *extras: str) -> None:
    """Stop ``command`` with the install line to run when an extra it needs is missing."""
    lacking = {extra: missing(extra) for extra in extras}
    lacking = {extra: names for extra, names in lacking.items() if names}
    if lacking:
        wanted = ",".join(lacking)
        names = ", ".join(name for names in lacking.values() for name in names)
        raise SystemExit(f"{command} needs the {wanted} extra ({names} missing): pip install 'facegraph[{wanted}]' (or -e '.[{wanted}]' in a clone)")
