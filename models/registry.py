"""The explicit registry of model families, the model spec, and loading.

A :class:`ModelSpec` names a family and exactly one source: a user's ONNX file
or Hugging Face folder (``path``), or a model of the built default pack (``pack``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from facegraph.models.arcface import ArcFace
from facegraph.models.base import Adapter
from facegraph.models.blazeface import BlazeFace
from facegraph.models.centerface import CenterFace
from facegraph.models.dlib_resnet import DlibResNetRecognizer
from facegraph.models.errors import ModelLoadError, UnknownFamilyError
from facegraph.models.image_classifier import ImageClassifier, locate_hf_model
from facegraph.models.mtcnn import MTCNNDetector
from facegraph.models.runtime import ProviderReport, RuntimeOptions, RuntimeSettings, create_session
from facegraph.models.scrfd import Scrfd
from facegraph.models.yolov10 import Yolov10
from facegraph.models.yolov8_face import Yolov8Face
from facegraph.models.yunet import Yunet

FAMILIES: dict[str, type[Adapter]] = {
    cls.family: cls for cls in (MTCNNDetector, BlazeFace, CenterFace, Yolov8Face, Yolov10, Scrfd, Yunet, DlibResNetRecognizer, ArcFace, ImageClassifier)
}


def family_class(name: str, role: str | None = None) -> type[Adapter]:
    """The class for a family name; raises UnknownFamilyError listing the known ones."""
    cls = FAMILIES.get(name)
    if cls is None or (role is not None and cls.role != role):
        known = sorted(n for n, c in FAMILIES.items() if role is None or c.role == role)
        raise UnknownFamilyError(f"unknown {role or 'model'} family '{name}'; known: {', '.join(known)}")
    return cls


def detector_landmarks(spec: "ModelSpec") -> tuple[str, ...] | None:
    """The landmarks a detector spec's faces will carry, read from its file where the family says it varies.

    A file that is not there yet (a config checked on another machine) counts as the family's default.
    """
    cls = family_class(spec.family, "detector")
    file_landmarks = getattr(cls, "file_landmarks", None)
    if file_landmarks is None or spec.pack:
        return cls.landmarks
    import onnx

    path = Path(spec.path).expanduser()
    if not path.is_file():
        return cls.landmarks
    proto = onnx.load(str(path), load_external_data=False)
    return file_landmarks(list(proto.graph.output))


class ModelSpec(RuntimeSettings):
    """One model: family, source, variant, runtime (``RuntimeSettings``' fields) and family settings."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    family: str
    path: str | None = None
    pack: str | None = None
    variant: str = "fp32"
    # ONNX Runtime intra-op threads; None follows the replica's CPU share (rounded, at least 1).
    intra_op_threads: int | None = Field(None, ge=1, le=256)
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("path", "pack") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, pack (got {given or 'none'})")
        # An unknown family is refused where its role is known (the graph config, load_model), so
        # the error lists only the families of that role.
        return self

    @property
    def source(self) -> str:
        return self.path or f"pack:{self.pack}"

    def runtime(self, gpu_fraction: float = 0.0, cpu_threads: int = 1) -> RuntimeOptions:
        settings = self.model_dump(include=set(RuntimeSettings.model_fields))
        return RuntimeOptions(**settings, gpu_fraction=gpu_fraction, cpu_threads=self.intra_op_threads or cpu_threads)


@dataclass
class LoadedModel:
    """An adapter plus what was loaded and where it really runs."""

    spec: ModelSpec
    adapter: Adapter
    files: dict[str, str]
    reports: dict[str, ProviderReport]
    # How an optimised variant was made and what it costs (``facegraph optimize``'s manifest), else None.
    accuracy: dict[str, Any] | None = None
    # First 16 hex digits of the sha256 over the model's ONNX files: names its embedding space.
    digest: str = ""

    @property
    def provider(self) -> str:
        return next(iter(self.reports.values())).active

    def describe(self) -> dict:
        reports = list(self.reports.values())
        return {
            **self.adapter.describe(),
            "source": self.spec.source,
            "files": self.files,
            "variant": self.spec.variant,
            "provider": reports[0].active,
            "device": reports[0].device,
            "fallbacks": [f.__dict__ for r in reports for f in r.fallbacks],
            "gpu_mem_limit_mb": reports[0].gpu_mem_limit_mb,
            "intra_op_threads": reports[0].intra_op_threads,
            "accuracy": self.accuracy,
            "digest": self.digest,
        }


def pack_file(cache_dir: Path, pack: str, name: str, variant: str) -> Path:
    """Where the default pack keeps one file of one model."""
    suffix = "" if variant in ("fp32", "") else f".{variant}"
    return cache_dir / "pack" / pack / f"{name}{suffix}.onnx"


def variant_manifest(model_file: Path) -> Path:
    """Where ``facegraph optimize`` records a variant's making and measured cost: beside the model's first file."""
    return model_file.with_name(model_file.name.removesuffix(".onnx") + ".manifest.json")


def _variant_accuracy(first: Path) -> dict[str, Any] | None:
    """The variant, method, floors verdict and accuracy measurements from an optimised model's manifest."""
    if not variant_manifest(Path(first)).is_file():
        return None
    manifest = json.loads(variant_manifest(Path(first)).read_text())
    keys = ("variant", "method", "within_floors", "forced", "accuracy", "floors")
    return {k: manifest.get(k) for k in keys} | {"size_ratio": manifest.get("performance", {}).get("size_ratio")}


def _digest(files: dict[str, Path]) -> str:
    """sha256 over a model's files, in file-name order; first 16 hex digits."""
    digest = hashlib.sha256()
    for _, source in sorted(files.items()):
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _locate(cls: type[Adapter], spec: ModelSpec, cache_dir: Path | None) -> tuple[dict[str, Path], dict]:
    """ONNX files per file name, and family resources."""
    read_resources = getattr(cls, "read_resources", None)
    if spec.pack:
        if cache_dir is None:
            raise ModelLoadError("a pack model needs the model cache directory")
        files = {name: pack_file(cache_dir, spec.pack, name, spec.variant) for name in cls.files}
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent:
            raise ModelLoadError(
                f"default pack model '{spec.pack}' ({spec.variant}) is not built: missing {', '.join(absent)}. "
                "Run `facegraph models build`."
            )
        return files, read_resources(files[cls.files[0]], None) if read_resources else {}
    path = Path(spec.path).expanduser()
    if path.is_dir():
        if cls.files == ("model",):
            model = locate_hf_model(path, spec.variant)
            return {"model": model}, read_resources(model, path) if read_resources else {}
        files = {name: path / f"{name}.onnx" for name in cls.files}
        return files, {}
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if len(cls.files) != 1:
        raise ModelLoadError(f"family '{spec.family}' needs a folder with {', '.join(f + '.onnx' for f in cls.files)}")
    return {"model": path}, read_resources(path, None) if read_resources else {}


def load_model(
    spec: ModelSpec, gpu_fraction: float = 0.0, cpu_threads: int = 1, cache_dir: Path | None = None, role: str | None = None
) -> LoadedModel:
    """Build the sessions for a spec and wrap them in the family's adapter."""
    cls = family_class(spec.family, role)
    files, resources = _locate(cls, spec, cache_dir)
    runtime = spec.runtime(gpu_fraction, cpu_threads)
    sessions, reports = {}, {}
    for name, source in files.items():
        sessions[name], reports[name] = create_session(source, runtime)
    settings = cls.Settings.model_validate(spec.settings)
    adapter = cls(sessions, settings, **resources)
    shown = {name: str(src) for name, src in files.items()}
    accuracy = _variant_accuracy(next(iter(files.values())))
    return LoadedModel(spec=spec, adapter=adapter, files=shown, reports=reports, accuracy=accuracy, digest=_digest(files))
