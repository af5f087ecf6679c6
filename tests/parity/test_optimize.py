"""``facegraph optimize``: variants of the default pack and of fixture models, measured against fp32 and held to floors.

The default pack is copied to a temporary cache so the real one stays untouched.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facegraph.graph.cli import main
from facegraph.models import optimize as opt
from tests.fixture_models import RGB_CLASSIFIER, pooled_arcface, rgb_classifier, write_hf_classifier
from facegraph.models.geometry import iou
from facegraph.models.pack.build import sha256_of
from facegraph.models.registry import ModelSpec, load_model, pack_file, variant_manifest
from tests.pack import pack_dir

ROUNDS = 1  # speed is measured, not asserted: one timed round keeps the suite quick


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    shutil.copytree(pack_dir() / "pack", root / "pack")
    return root


@pytest.fixture(scope="module")
def pack_variants(cache):
    return {
        (name, method): opt.optimize(name, method, cache, rounds=ROUNDS)
        for name in ("dlib-resnet", "mtcnn")
        for method in ("fp16", "int8")
    }


def _astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, :3])


def test_pack_variants_are_written_beside_fp32_with_a_manifest(cache, pack_variants):
    for (name, method), result in pack_variants.items():
        assert result.written and not result.failures
        files = {"dlib-resnet": ("model",), "mtcnn": ("pnet", "rnet", "onet")}[name]
        for file_name in files:
            assert result.files[file_name] == pack_file(cache, name, file_name, method)
            assert result.files[file_name].is_file()
        assert result.manifest_path == variant_manifest(pack_file(cache, name, files[0], method))
        manifest = json.loads(result.manifest_path.read_text())
        for file_name in files:
            assert manifest["source_files"][file_name]["sha256"] == sha256_of(pack_file(cache, name, file_name, "fp32"))
            assert manifest["files"][file_name]["sha256"] == sha256_of(result.files[file_name])
        assert manifest["variant"] == method and manifest["within_floors"] and not manifest["forced"]
        perf = manifest["performance"]
        assert perf["fp32_ms"] > 0 and perf["variant_ms"] > 0 and perf["speedup"] > 0
        # fp16 halves the file, int8 quarters it.
        assert perf["size_ratio"] == pytest.approx(0.5 if method == "fp16" else 0.25, abs=0.05)


def test_pack_recognizer_variants_hold_their_floors(pack_variants):
    for method, least in (("fp16", 0.999), ("int8", 0.99)):
        accuracy = pack_variants[("dlib-resnet", method)].manifest["accuracy"]
        assert accuracy["crops"] >= 20  # astronaut moved about, camera man, 20 lfw faces
        assert accuracy["min_embedding_cosine"] >= least
        assert accuracy["decision_changes"] == 0
        assert accuracy["correct_fp32"] == accuracy["correct_variant"] == accuracy["pairs"]
        assert accuracy["max_embedding_distance"] < 0.1  # the same-person threshold is 0.6


def test_pack_detector_variants_hold_their_floors(pack_variants):
    for method in ("fp16", "int8"):
        accuracy = pack_variants[("mtcnn", method)].manifest["accuracy"]
        assert accuracy["faces_fp32"] == accuracy["faces_variant"] >= 28
        assert accuracy["mean_box_iou"] >= 0.9
        assert accuracy["max_score_change"] < 0.05


def test_a_built_pack_variant_loads_and_describes_its_cost(cache, pack_variants):
    picture = _astronaut()
    fp32 = load_model(ModelSpec(family="mtcnn", pack="mtcnn", device="cpu"), cache_dir=cache)
    assert fp32.describe()["accuracy"] is None
    half = load_model(ModelSpec(family="mtcnn", pack="mtcnn", variant="fp16", device="cpu"), cache_dir=cache)
    described = half.describe()
    assert described["variant"] == "fp16" and described["files"]["pnet"].endswith("pnet.fp16.onnx")
    assert described["accuracy"]["within_floors"] and described["accuracy"]["accuracy"]["mean_box_iou"] >= 0.9
    (face,) = half.adapter.detect([picture])[0]
    (reference,) = fp32.adapter.detect([picture])[0]
    # Not much closer: a P-Net candidate more or less changes which box survives R-Net's NMS.
    assert iou(np.array([face.bbox]), np.array([reference.bbox]))[0, 0] > 0.9

    recognizer = load_model(ModelSpec(family="dlib-resnet", pack="dlib-resnet", variant="int8", device="cpu"), cache_dir=cache)
    assert recognizer.describe()["accuracy"]["accuracy"]["min_embedding_cosine"] >= 0.99
    assert recognizer.describe()["accuracy"]["size_ratio"] < 0.3


def test_four_bit_methods_are_refused_where_there_are_no_large_matmuls(cache, capsys):
    for method, op in (("q4", "MatMulNBits"), ("bnb4", "MatMulBnb4")):
        for name in ("dlib-resnet", "mtcnn"):
            with pytest.raises(opt.OptimizeError, match=f"{method} refused: 4-bit weight-only quantisation \\({op}\\)"):
                opt.optimize(name, method, cache)
            assert not pack_file(cache, name, "model" if name == "dlib-resnet" else "pnet", method).exists()
    assert main(["optimize", "dlib-resnet", "--to", "q4", "--cache", str(cache)]) == 2
    assert "MatMul weights 256x128" in capsys.readouterr().err


def _conv_classifier() -> bytes:
    """A 64x64 convolutional classifier (two 3x3 convolutions, global pooling, a 32x2 MatMul): where 4-bit does not apply."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) / np.sqrt(27)).astype(np.float32), "c1"),
        numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) / np.sqrt(144)).astype(np.float32), "c2"),
        numpy_helper.from_array((rng.standard_normal((32, 2)) / np.sqrt(32)).astype(np.float32), "head"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixel_values", "c1"], ["x1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["x1"], ["a1"]),
        helper.make_node("Conv", ["a1", "c2"], ["x2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["x2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "head"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def test_bnb4_refuses_a_convolutional_classifier_and_says_why(cache, tmp_path):
    source = tmp_path / "conv.onnx"
    source.write_bytes(_conv_classifier())
    (tmp_path / "conv.json").write_text(json.dumps(RGB_CLASSIFIER))
    with pytest.raises(opt.OptimizeError, match="bnb4 refused") as refused:
        opt.optimize(str(source), "bnb4", cache, family="image-classifier", rounds=ROUNDS)
    reason = refused.value.message
    assert "0.0% of this model's weights" in reason and "MatMul weights 32x2" in reason
    assert "Convolutions and Gemm are left as they are by bnb4" in reason and "int8-static or fp16" in reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.json", "conv.onnx"]


def test_fixture_recognizer_file_variants(cache, tmp_path):
    source = tmp_path / "arcface.onnx"
    source.write_bytes(pooled_arcface())
    for method in ("fp16", "int8", "int8-static"):
        result = opt.optimize(str(source), method, cache, family="arcface", rounds=ROUNDS, calibration_limit=8)
        variant = tmp_path / f"arcface.{method}.onnx"
        assert result.files == {"model": variant} and variant.is_file()
        accuracy = result.manifest["accuracy"]
        assert accuracy["min_embedding_cosine"] >= opt.FLOORS[1].limits[method]
        assert accuracy["decision_changes"] == 0
        loaded = load_model(ModelSpec(family="arcface", path=str(variant), device="cpu"))
        assert loaded.describe()["accuracy"]["variant"] == method
    assert result.manifest["settings"]["model"]["calibration_batches"] <= 8


def test_fixture_classifier_hf_folder_variant_is_picked_by_variant(cache, tmp_path):
    folder = tmp_path / "clf"
    write_hf_classifier(folder)
    result = opt.optimize(str(folder), "int8", cache, family="image-classifier", rounds=ROUNDS)
    assert result.files["model"] == folder / "onnx" / "model_int8.onnx"
    assert result.manifest["accuracy"]["max_probability_change"] <= 0.05
    loaded = load_model(ModelSpec(family="image-classifier", path=str(folder), variant="int8", device="cpu"))
    assert loaded.files["model"].endswith("model_int8.onnx")
    assert loaded.describe()["accuracy"]["accuracy"]["max_probability_change"] <= 0.05


def _scaled_classifier(scale: float) -> onnx.ModelProto:
    """``rgb-classifier`` with its colour weights times ``scale`` and its logit gain divided by it: the same function."""
    model = onnx.load_from_string(rgb_classifier())
    for tensor in model.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.shape == (3, 1):
            tensor.CopyFrom(numpy_helper.from_array(value * scale, tensor.name))
        elif value.shape == () and value == 4.0:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(4.0 / scale, np.float32), tensor.name))
    return model


def test_a_variant_below_its_floor_is_refused_unless_forced(cache, tmp_path):
    # Weights of 1e5 do not fit float16 (largest 65504): the converter clamps them and
    # the fake probabilities move by more than the classifier floor allows.
    source = tmp_path / "wide.onnx"
    onnx.save(_scaled_classifier(1e5), source)
    (tmp_path / "wide.json").write_text(json.dumps(RGB_CLASSIFIER))
    with pytest.raises(opt.AccuracyFloorError, match="max_probability_change") as refused:
        opt.optimize(str(source), "fp16", cache, family="image-classifier", rounds=ROUNDS)
    manifest = refused.value.result.manifest
    assert manifest["accuracy"]["max_probability_change"] > 0.05 and not manifest["within_floors"]
    assert manifest["settings"]["model"]["values_clamped_to_fp16_range"] >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.json", "wide.onnx"]

    assert main(["optimize", str(source), "--to", "fp16", "--family", "image-classifier", "--cache", str(cache)]) == 1

    kept = opt.optimize(str(source), "fp16", cache, family="image-classifier", force=True, rounds=ROUNDS)
    assert kept.written and kept.failures and kept.manifest["forced"]
    assert (tmp_path / "wide.fp16.onnx").is_file() and (tmp_path / "wide.fp16.json").is_file()
    assert json.loads((tmp_path / "wide.fp16.manifest.json").read_text())["forced"] is True


def _wide_matmul_classifier() -> bytes:
    """A 64x64 classifier whose weights sit in two MatMuls (192x512, 512x2): where q4 applies."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array((rng.standard_normal((192, 512)) / np.sqrt(192)).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((512, 2)) / np.sqrt(512)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["pixel_values"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["hidden"], name="fc1"),
        helper.make_node("Relu", ["hidden"], ["act"]),
        helper.make_node("MatMul", ["act", "w2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("method, op", [("q4", "MatMulNBits"), ("bnb4", "MatMulBnb4")])
def test_four_bit_methods_rewrite_large_matmuls(cache, tmp_path, method, op):
    source = tmp_path / "wide.onnx"
    source.write_bytes(_wide_matmul_classifier())
    (tmp_path / "wide.json").write_text(json.dumps(RGB_CLASSIFIER))
    result = opt.optimize(str(source), method, cache, family="image-classifier", rounds=ROUNDS)
    assert result.written and result.files["model"] == tmp_path / f"wide.{method}.onnx"
    ops = [n.op_type for n in onnx.load(result.files["model"]).graph.node]
    # fc1 (192x512) is rewritten; fc2 (512x2) is too small to pay and stays a MatMul.
    assert ops.count(op) == 1 and ops.count("MatMul") == 1 and result.manifest["settings"]["model"]["quantized_matmuls"] == 1
    assert result.manifest["accuracy"]["max_probability_change"] <= opt.FLOORS[3].limits[method] == 0.05
    assert result.manifest["performance"]["size_ratio"] < 0.3


VIT_SCALE = 1 / 3  # width 256, 2 layers, 2 heads: 1.8 M weights, 7 MB; every attention and MLP MatMul is large


def _write_hf_vit(folder) -> None:
    """The ViT-B/16-shaped benchmark classifier (random weights), as a Hugging Face export folder."""
    from facegraph.benchmarks.gpu.heavy import vit_shaped

    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(vit_shaped(VIT_SCALE))
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "real", "1": "fake"}}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 224, "width": 224}, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )


def test_bnb4_of_a_vit_shaped_classifier_is_measured_against_fp32(cache, tmp_path):
    folder = tmp_path / "vit"
    _write_hf_vit(folder)
    # Forced: random weights put every face crop at 0.24-0.69 fake, where a logit moves a
    # probability most, and 4-bit weights (q4 as well as bnb4) move some crop by more than
    # 0.05 there. What is checked is the conversion and that it is measured and floored.
    result = opt.optimize(str(folder), "bnb4", cache, family="image-classifier", force=True, rounds=ROUNDS)
    assert result.files["model"] == folder / "onnx" / "model_bnb4.onnx"
    ops = [n.op_type for n in onnx.load(result.files["model"]).graph.node]
    settings = result.manifest["settings"]["model"]
    assert settings["quant_type"] == "NF4" and settings["block_size"] == 64
    # q, k, v, output, and the two MLP MatMuls of both layers; the 256x2 head stays float.
    assert ops.count("MatMulBnb4") == settings["quantized_matmuls"] == 12 and ops.count("MatMul") == 1 + 2 * 2

    accuracy, floor = result.manifest["accuracy"], result.manifest["floors"]["max_probability_change"]
    assert accuracy["crops"] >= 20 and floor["limit"] == opt.FLOORS[3].limits["q4"]
    assert result.manifest["within_floors"] == (accuracy["max_probability_change"] <= floor["limit"])
    # Close to fp32, far from what a broken conversion gives (FP4 in its place: mean 0.15, 14 labels of 28).
    assert accuracy["mean_probability_change"] < 0.08 and accuracy["max_probability_change"] < 0.2
    assert result.manifest["performance"]["size_ratio"] < 0.3

    loaded = load_model(ModelSpec(family="image-classifier", path=str(folder), variant="bnb4", device="cpu"))
    assert loaded.files["model"].endswith("onnx/model_bnb4.onnx")
    assert loaded.describe()["accuracy"]["variant"] == "bnb4"
