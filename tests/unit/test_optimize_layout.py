"""``facegraph optimize`` without a model: where variants go and the floors every method has."""

from __future__ import annotations

from facegraph.models import optimize as opt


def test_the_floor_table_names_every_method():
    for floor in opt.FLOORS:
        assert set(floor.limits) == set(opt.METHODS)
    assert {f.role for f in opt.FLOORS} == {"detector", "recognizer", "classifier"}


def test_optimize_takes_the_pack_paths_that_models_list_prints(tmp_path):
    from facegraph.models.optimize import resolve
    from facegraph.models.registry import pack_file

    model = pack_file(tmp_path, "dlib-resnet", "model", "fp32")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")  # resolving reads no model bytes
    for given in (model, model.parent):
        layout = resolve(str(given), "fp16", tmp_path)
        assert layout.source == "pack:dlib-resnet" and layout.family == "dlib-resnet"
        assert layout.final["model"] == pack_file(tmp_path, "dlib-resnet", "model", "fp16")


def test_commands_name_the_extra_they_need_when_it_is_missing(monkeypatch):
    import pytest

    from facegraph.models import extras

    monkeypatch.setitem(extras.EXTRAS, "bench", ("skimage", "no_such_module_fg"))
    monkeypatch.setitem(extras.EXTRAS, "convert", ("no_such_converter_fg",))
    with pytest.raises(SystemExit) as stop:
        extras.require("facegraph optimize", "convert", "bench")
    assert "no_such_module_fg" in str(stop.value) and "no_such_converter_fg" in str(stop.value)
    assert "facegraph[convert,bench]" in str(stop.value)
    extras.require("facegraph serve")  # no extra: nothing to say


# The files a Hugging Face / transformers.js export of a classifier ships, by variant.
HF_VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx", "q4": "model_q4.onnx", "bnb4": "model_bnb4.onnx"}


def test_a_hugging_face_folder_with_all_five_files_loads_each_variant_by_name(tmp_path):
    import onnx

    from tests.fixture_models import rgb_classifier, write_hf_classifier
    from facegraph.models.registry import ModelSpec, load_model

    write_hf_classifier(tmp_path)
    for variant, name in HF_VARIANT_FILES.items():
        model = onnx.load_from_string(rgb_classifier())
        model.doc_string = variant  # each file its own bytes, so a wrong pick shows in the digest
        onnx.save(model, tmp_path / "onnx" / name)
    digests = set()
    for variant, name in HF_VARIANT_FILES.items():
        loaded = load_model(ModelSpec(family="image-classifier", path=str(tmp_path), variant=variant, device="cpu"))
        assert loaded.files["model"] == str(tmp_path / "onnx" / name)
        assert loaded.adapter.pre.labels == ["real", "fake"]
        digests.add(loaded.digest)
    assert len(digests) == len(HF_VARIANT_FILES)


def test_every_method_is_described_and_has_a_hugging_face_file_name(tmp_path):
    from tests.fixture_models import write_hf_classifier
    from facegraph.models.optimize import resolve
    from facegraph.models.optimize.floors import DESCRIPTIONS, FOUR_BIT_METHODS

    assert set(DESCRIPTIONS) == set(opt.METHODS) and set(FOUR_BIT_METHODS) <= set(opt.METHODS)
    assert set(HF_VARIANT_FILES) - {"fp32"} <= set(opt.METHODS)
    write_hf_classifier(tmp_path)
    for method in opt.METHODS:
        layout = resolve(str(tmp_path), method, tmp_path, family="image-classifier")
        assert layout.final["model"] == tmp_path / "onnx" / f"model_{method}.onnx"


def test_the_cli_offers_every_method():
    from facegraph.graph.cli import build_parser

    optimize = build_parser()._subparsers._group_actions[0].choices["optimize"]
    (to,) = [a for a in optimize._actions if "--to" in a.option_strings]
    assert tuple(to.choices) == opt.METHODS
