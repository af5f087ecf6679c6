"""``facegraph optimize`` without a model: where variants go and the floors every method has."""

from __future__ import annotations

from models import optimize as opt


def test_the_floor_table_names_every_method():
    for floor in opt.FLOORS:
        assert set(floor.limits) == set(opt.METHODS)
    assert {f.role for f in opt.FLOORS} == {"detector", "recognizer", "classifier"}


def test_optimize_takes_the_pack_paths_that_models_list_prints(tmp_path):
    from models.optimize import resolve
    from models.registry import pack_file

    model = pack_file(tmp_path, "dlib-resnet", "model", "fp32")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")  # resolving reads no model bytes
    for given in (model, model.parent):
        layout = resolve(str(given), "fp16", tmp_path)
        assert layout.source == "pack:dlib-resnet" and layout.family == "dlib-resnet"
        assert layout.final["model"] == pack_file(tmp_path, "dlib-resnet", "model", "fp16")


def test_commands_name_the_extra_they_need_when_it_is_missing(monkeypatch):
    import pytest

    from benchmarks import cli

    monkeypatch.setattr(cli, "BENCH_MODULES", ("skimage", "no_such_module_fg"))
    with pytest.raises(SystemExit) as stop:
        cli.require_bench_extra("facegraph optimize")
    assert "no_such_module_fg" in str(stop.value) and "facegraph[bench]" in str(stop.value)
