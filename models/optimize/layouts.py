"""Where a model's fp32 files are and where its variant goes: a default pack model or a user's path."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from facegraph.models.errors import ModelLoadError
from facegraph.models.image_classifier import locate_hf_model
from facegraph.models.pack.build import pack_models
from facegraph.models.registry import ModelSpec, family_class, pack_file, variant_manifest
from facegraph.models.optimize.floors import OptimizeError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sources and layout


@dataclass(frozen=True)
class Layout:
    """Where a model's fp32 files are, and where its variant goes.

    Variant files are first written under a staging folder at ``staged[name]`` (relative),
    laid out so that ``stage_spec`` loads them; once accepted they are copied to ``final``.
    """

    family: str
    source: str
    fp32: dict[str, Path]
    staged: dict[str, Path]
    final: dict[str, Path]
    # Files the variant needs beside it to load (sidecar JSON, HF configs): (source, staged, final);
    # staged always, copied to ``final`` unless that is the source itself.
    extras: tuple[tuple[Path, Path, Path], ...]
    manifest: Path
    stage_spec: Callable[[Path], tuple[ModelSpec, Path | None]]
    fp32_spec: ModelSpec
    cache_dir: Path | None


def _pack_layout(name: str, family: str, variant: str, cache_dir: Path, out: Path | None) -> Layout:
    cls = family_class(family)
    fp32 = {f: pack_file(cache_dir, name, f, "fp32") for f in cls.files}
    absent = [str(p) for p in fp32.values() if not p.is_file()]
    if absent:
        raise OptimizeError(f"default pack model '{name}' is not built (missing {', '.join(absent)}): run `facegraph models build`")
    staged = {f: pack_file(Path(), name, f, variant) for f in cls.files}
    final = {f: (out / p.name if out else cache_dir / p) for f, p in staged.items()}
    return Layout(
        family=family,
        source=f"pack:{name}",
        fp32=fp32,
        staged=staged,
        final=final,
        extras=(),
        manifest=variant_manifest(final[cls.files[0]]),
        stage_spec=lambda root: (ModelSpec(family=family, pack=name, variant=variant, device="cpu"), root),
        fp32_spec=ModelSpec(family=family, pack=name, device="cpu"),
        cache_dir=cache_dir,
    )


def _one_file(family: str, path: Path, model: Path, staged: dict, root: Path, extras: tuple, stage_spec, fp32_spec: ModelSpec, cache_dir: Path) -> Layout:
    """The layout of a one-file model given by path: its variant ``staged["model"]`` under ``root``."""
    return Layout(
        family=family,
        source=str(path),
        fp32={"model": model},
        staged=staged,
        final={"model": root / staged["model"]},
        extras=extras,
        manifest=variant_manifest(root / staged["model"]),
        stage_spec=stage_spec,
        fp32_spec=fp32_spec,
        cache_dir=cache_dir,
    )


def _path_layout(path: Path, family: str, variant: str, cache_dir: Path, out: Path | None) -> Layout:
    cls = family_class(family)
    fp32_spec = ModelSpec(family=family, path=str(path), device="cpu")
    if path.is_file():
        if len(cls.files) != 1:
            raise OptimizeError(f"family '{family}' needs a folder with {', '.join(f + '.onnx' for f in cls.files)}")
        root = out or path.parent
        stem = path.name.removesuffix(".onnx")
        staged = {"model": Path(f"{stem}.{variant}.onnx")}
        # The classifier's preprocessing sidecar, renamed so the variant file finds it too.
        sidecar = next((p for p in (path.with_suffix(".json"), path.parent / "facegraph.json") if p.is_file()), None)
        extras = ((sidecar, Path(f"{stem}.{variant}.json"), root / f"{stem}.{variant}.json"),) if sidecar else ()
        spec = lambda stage: (ModelSpec(family=family, path=str(stage / staged["model"]), device="cpu"), cache_dir)  # noqa: E731
        return _one_file(family, path, path, staged, root, extras, spec, fp32_spec, cache_dir)
    if not path.is_dir():
        raise OptimizeError(f"model not found: '{path}' is neither a default pack model ({', '.join(m.name for m in pack_models())}) nor a file or folder")
    if len(cls.files) == 1:
        # A Hugging Face export: the variant is onnx/model_<variant>.onnx, picked by `variant`.
        try:
            model = locate_hf_model(path, "fp32")
        except ModelLoadError as exc:
            raise OptimizeError(exc.message) from None
        root = out or path
        staged = {"model": model.parent.relative_to(path) / f"model_{variant}.onnx"}
        configs = [p for p in (path / "config.json", path / "preprocessor_config.json", model.parent / "facegraph.json") if p.is_file()]
        extras = tuple((p, p.relative_to(path), root / p.relative_to(path)) for p in configs)
        spec = lambda stage: (ModelSpec(family=family, path=str(stage), variant=variant, device="cpu"), cache_dir)  # noqa: E731
        return _one_file(family, path, model, staged, root, extras, spec, fp32_spec, cache_dir)
    # A folder of several files (pnet.onnx, ...): the variant is a folder of the same names.
    root = out or path / variant
    staged = {f: Path(f"{f}.onnx") for f in cls.files}
    return Layout(
        family=family,
        source=str(path),
        fp32={f: path / f"{f}.onnx" for f in cls.files},
        staged=staged,
        final={f: root / p for f, p in staged.items()},
        extras=(),
        manifest=variant_manifest(root / staged[cls.files[0]]),
        stage_spec=lambda stage: (ModelSpec(family=family, path=str(stage), device="cpu"), cache_dir),
        fp32_spec=fp32_spec,
        cache_dir=cache_dir,
    )


def _pack_name_of(path: Path, cache_dir: Path, packs: dict) -> str | None:
    """The pack model a path names (its folder, or a file in it, as ``facegraph models list`` prints them)."""
    try:
        path = path.resolve()
        root = (cache_dir / "pack").resolve()
    except OSError:
        return None
    folder = path if path.is_dir() else path.parent
    if folder.parent == root and folder.name in packs:
        return folder.name
    return None


def resolve(model: str, variant: str, cache_dir: Path, family: str | None = None, out: Path | None = None) -> Layout:
    """The layout for a default-pack name or a path (with its family)."""
    packs = {m.name: m for m in pack_models()}
    if model not in packs or Path(model).exists():
        model = _pack_name_of(Path(model).expanduser(), cache_dir, packs) or model
    if model in packs and not Path(model).exists():
        pack = packs[model]
        if family not in (None, pack.family):
            raise OptimizeError(f"default pack model '{model}' is family '{pack.family}', not '{family}'")
        return _pack_layout(model, pack.family, variant, cache_dir, out)
    if family is None:
        raise OptimizeError(f"'{model}' is not a default pack model ({', '.join(packs)}): give its family with --family")
    try:
        family_class(family)
    except ModelLoadError as exc:
        raise OptimizeError(exc.message) from None
    return _path_layout(Path(model).expanduser(), family, variant, cache_dir, out)
