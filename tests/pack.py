"""The built default pack (``facegraph models build``, run by ``make test`` before the suite)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graph.config import default_cache_dir
from models.pack.build import fetch, pack_models, read_manifest
from models.registry import LoadedModel, ModelSpec, load_model


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
