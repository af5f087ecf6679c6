"""The built default pack (``facegraph models build``, run by ``make test`` before the suite)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facegraph.graph.config import default_cache_dir
from facegraph.models.pack.build import fetch, pack_models, read_manifest
from facegraph.models.registry import LoadedModel, ModelSpec, load_model


def pack_dir() -> Path:
    cache = default_cache_dir()
    missing = {m.name for m in pack_models()} - set(read_manifest(cache)["models"])
    if missing:
        pytest.fail(f"the default pack is not built ({', '.join(sorted(missing))}): run `facegraph models build` first")
    return cache


def load_pack(name: str, family: str) -> LoadedModel:
    return load_model(ModelSpec(family=family, pack=name, device="cpu"), cpu_threads=2, cache_dir=pack_dir())


def source_distribution(name: str) -> Path:
    """A pack model's verified source distribution in the download cache."""
    model = next(m for m in pack_models() if m.name == name)
    return fetch(model, default_cache_dir() / "downloads")


def load_reference(path: Path) -> dict:
    """A recorded reference file (``tests/reference/make_*_reference.py``): its arrays, and its ``meta`` record decoded."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = json.loads(str(arrays["meta"]))
    return arrays


INPUT_PREFIX = "input__"


def recorded_pictures(reference: dict) -> dict[str, np.ndarray]:
    """The uint8 pictures a reference file keeps as its network inputs were computed when it was recorded."""
    found = {k[len(INPUT_PREFIX):]: v for k, v in reference.items() if k.startswith(INPUT_PREFIX)}
    if not found:
        pytest.fail("the reference file keeps no input pictures: rerun its recorder")
    return found


def input_pictures_note(pictures: dict[str, np.ndarray]) -> dict:
    """What a reference file's ``meta`` says of its stored input pictures: which, and the libraries that made them."""
    import cv2

    return {"keys": sorted(pictures), "opencv": cv2.__version__, "numpy": np.__version__}


def write_reference(path: Path, arrays: dict[str, np.ndarray], meta: dict, pictures: dict[str, np.ndarray]) -> None:
    """Write a recorder's reference file: its arrays, ``meta`` as JSON and the input pictures it keeps (``INPUT_PREFIX``)."""
    arrays = {**arrays, "meta": np.array(json.dumps(meta)), **{INPUT_PREFIX + key: picture for key, picture in pictures.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {meta['seconds']} s")


def store_input_pictures(path: Path, pictures: dict[str, np.ndarray], inputs: dict[str, np.ndarray], recorded_sums: dict[str, float]) -> None:
    """Add ``pictures`` to a recorded reference file, once their network ``inputs`` prove to be the ones it was recorded on.

    Each input's float64 sum must equal the sum the file recorded exactly: run this with the
    library releases the reference was made with (its ``meta`` names them), not today's.
    """
    for key, x in inputs.items():
        got = float(x.astype(np.float64).sum())
        if got != recorded_sums[key]:
            raise SystemExit(f"{key}: sum {got!r}, the reference recorded {recorded_sums[key]!r}: these are not its inputs")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith(INPUT_PREFIX)}
    meta = json.loads(str(arrays["meta"]))
    meta["input_pictures"] = input_pictures_note(pictures)
    arrays["meta"] = np.array(json.dumps(meta))
    arrays.update({INPUT_PREFIX + key: np.ascontiguousarray(picture, np.uint8) for key, picture in pictures.items()})
    np.savez_compressed(path, **arrays)
    print(f"stored {len(pictures)} input pictures in {path} ({path.stat().st_size / 1024:.0f} KiB)")
