import json

import numpy as np
import onnx
import pytest

from facegraph.models.errors import ModelLoadError
from tests.fixture_models import RGB_CLASSIFIER, build_fixture, pooled_arcface_reference, rgb_classifier_reference, write_hf_classifier, fixture_path
from facegraph.models.geometry import ARCFACE_TEMPLATE_112
from facegraph.models.registry import ModelSpec, load_model


def crops(n, size, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, size[1], size[0], 3), dtype=np.uint8))


def test_arcface_embeds_as_the_reference_and_normalises():
    model = load_model(ModelSpec(family="arcface", path=fixture_path("pooled-arcface"), device="cpu"))
    adapter = model.adapter
    batch = crops(7, (112, 112))
    emb = adapter.embed(batch)
    assert emb.shape == (7, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.abs(emb - pooled_arcface_reference(np.stack(batch))).max() < 1e-5
    assert adapter.dimension == 32
    spec = adapter.crop_spec
    assert spec.size == (112, 112) and spec.template[:5] == ARCFACE_TEMPLATE_112
    # The sixth point, for detectors that give the mouth's centre: between the corners.
    assert spec.points[5] == "mouth_center"
    np.testing.assert_allclose(spec.template[5], np.mean(ARCFACE_TEMPLATE_112[3:5], axis=0))
    assert adapter.embed([]).shape[0] == 0
    assert model.describe()["provider"] == "CPUExecutionProvider"


def test_classifier_probability_is_the_known_function_of_the_pixels():
    adapter = load_model(ModelSpec(family="image-classifier", path=fixture_path("rgb-classifier"), device="cpu")).adapter
    batch = crops(6, (64, 64))
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((64, 64, 3), np.uint8)
    blue[..., 2] = 255
    batch += [red, blue]
    results = adapter.classify(batch)
    expected = rgb_classifier_reference(np.stack(batch))
    assert np.abs(np.array([r.fake_probability for r in results]) - expected).max() < 1e-5
    assert results[-2].label == "fake" and results[-1].label == "real"
    # Crops of another size are resized before scoring.
    (big,) = adapter.classify([np.full((200, 150, 3), (200, 10, 10), np.uint8)])
    (small,) = adapter.classify([np.full((64, 64, 3), (200, 10, 10), np.uint8)])
    assert abs(big.fake_probability - small.fake_probability) < 1e-4


def write_hf_folder(root, labels, variant_names=("model.onnx",)):
    write_hf_classifier(root, tuple(labels))
    for name in variant_names:
        (root / "onnx" / name).write_bytes((root / "onnx" / "model.onnx").read_bytes())


def test_hugging_face_folder_layout_and_variants(tmp_path):
    write_hf_folder(tmp_path, ["Realism", "Deepfake"], ("model.onnx", "model_fp16.onnx"))
    model = load_model(ModelSpec(family="image-classifier", path=str(tmp_path), variant="fp16", device="cpu"))
    assert model.files["model"].endswith("model_fp16.onnx")
    adapter = model.adapter
    assert adapter.pre.labels == ["Realism", "Deepfake"] and adapter.fake_index == 1
    batch = crops(3, (64, 64), seed=3)
    assert np.allclose([r.fake_probability for r in adapter.classify(batch)], rgb_classifier_reference(np.stack(batch)), atol=1e-5)
    with pytest.raises(ModelLoadError, match="model_int8.onnx"):
        load_model(ModelSpec(family="image-classifier", path=str(tmp_path), variant="int8", device="cpu"))


def test_fake_label_must_be_clear(tmp_path):
    write_hf_folder(tmp_path, ["cat", "dog"])
    with pytest.raises(ModelLoadError, match="fake_label"):
        load_model(ModelSpec(family="image-classifier", path=str(tmp_path), device="cpu"))
    model = load_model(ModelSpec(family="image-classifier", path=str(tmp_path), device="cpu", settings={"fake_label": "dog"}))
    assert model.adapter.fake_index == 1


def test_sidecar_json_next_to_the_file(tmp_path):
    files, _ = build_fixture("rgb-classifier")
    path = tmp_path / "detector.onnx"
    path.write_bytes(files["model"])
    sidecar = dict(RGB_CLASSIFIER, labels=["fake", "real"], channel_order="BGR")
    (tmp_path / "detector.json").write_text(json.dumps(sidecar))
    adapter = load_model(ModelSpec(family="image-classifier", path=str(path), device="cpu")).adapter
    assert adapter.fake_index == 0 and adapter.pre.channel_order == "BGR"
    # With BGR order the model sees the channels swapped: its "fake" logit is at index 1 ("real").
    batch = crops(2, (64, 64), seed=5)
    swapped = np.stack(batch)[..., ::-1]
    probs = [r.scores["real"] for r in adapter.classify(batch)]
    assert np.allclose(probs, rgb_classifier_reference(swapped), atol=1e-5)


def test_single_logit_head_uses_sigmoid(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2, 3], keepdims=0)
    unsq = helper.make_node("Unsqueeze", ["y", "axes"], ["logit"])
    graph = helper.make_graph(
        [node, unsq],
        "single",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "single.onnx"
    onnx.save(model, path)
    path.with_suffix(".json").write_text(json.dumps({"labels": ["real", "fake"], "mean": [0, 0, 0], "std": [1, 1, 1], "rescale": 1.0}))
    adapter = load_model(ModelSpec(family="image-classifier", path=str(path), device="cpu")).adapter
    (result,) = adapter.classify([np.full((8, 8, 3), 2, np.uint8)])
    assert abs(result.fake_probability - 1 / (1 + np.exp(-2.0))) < 1e-5
