"""Fixture detectors that see bright squares: letterbox, decode, NMS and mapping checked to pixels."""

import numpy as np
import pytest

from facegraph.models.errors import SignatureError, UnknownFamilyError
from tests.fixture_models import SQUARE_LANDMARKS, draw_squares, fixture_path
from facegraph.models.registry import ModelSpec, family_class, load_model

FAMILIES = [("yolov8-face", "square-yolov8-face"), ("scrfd", "square-scrfd"), ("yolov10", "square-yolov10")]
# (width, height, square) covering landscape, portrait, tiny, huge and odd sizes.
CASES = [
    (640, 640, (100, 120, 160, 200)),
    (1280, 720, (500, 300, 620, 420)),
    (300, 500, (40, 60, 90, 110)),
    (1920, 1080, (1000, 200, 1300, 500)),
    (123, 77, (20, 10, 50, 40)),
    (480, 1000, (200, 700, 300, 800)),
]


@pytest.fixture(scope="module", params=FAMILIES, ids=[f for f, _ in FAMILIES])
def detector(request):
    family, fixture = request.param
    return load_model(ModelSpec(family=family, path=fixture_path(fixture), device="cpu", settings={"score_threshold": 0.3})).adapter


@pytest.mark.parametrize("width,height,square", CASES)
def test_square_found_within_two_pixels(detector, width, height, square):
    (faces,) = detector.detect([draw_squares(width, height, [square], seed=width)])
    assert len(faces) == 1
    assert np.abs(np.asarray(faces[0].bbox) - np.asarray(square)).max() <= 2.0
    assert 0.3 <= faces[0].score <= 1.0


def test_landmarks_come_back_in_original_pixels(detector):
    if detector.family == "yolov10":
        pytest.skip("YOLOv10 gives no landmarks")
    square = (500, 300, 620, 420)
    (faces,) = detector.detect([draw_squares(1280, 720, [square])])
    x1, y1, x2, y2 = square
    expected = np.stack([x1 + SQUARE_LANDMARKS[:, 0] * (x2 - x1), y1 + SQUARE_LANDMARKS[:, 1] * (y2 - y1)], axis=1)
    assert faces[0].landmarks.shape == (5, 2)
    assert np.abs(faces[0].landmarks - expected).max() <= 2.0


def test_batch_of_mixed_sizes_keeps_each_image_apart(detector):
    images = [draw_squares(w, h, [sq], seed=i) for i, (w, h, sq) in enumerate(CASES)]
    images.insert(2, draw_squares(400, 300, []))
    results = detector.detect(images)
    assert len(results) == len(images)
    assert results[2] == []
    for faces, (_, _, square) in zip(results[:2] + results[3:], CASES):
        assert len(faces) == 1 and np.abs(np.asarray(faces[0].bbox) - square).max() <= 2.0


def test_empty_batch_and_blank_image(detector):
    assert detector.detect([]) == []
    assert detector.detect([np.zeros((50, 80, 3), np.uint8)]) == [[]]


@pytest.mark.parametrize("family,fixture", FAMILIES[:2])
def test_several_faces_best_first_and_max_faces(family, fixture):
    squares = [(100, 100, 200, 200), (600, 300, 680, 380), (1000, 500, 1100, 620)]
    image = draw_squares(1280, 720, squares)
    adapter = load_model(ModelSpec(family=family, path=fixture_path(fixture), device="cpu", settings={"score_threshold": 0.3})).adapter
    (faces,) = adapter.detect([image])
    assert len(faces) == 3
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for square in squares:
        assert min(np.abs(np.asarray(f.bbox) - square).max() for f in faces) <= 2.0
    capped = load_model(
        ModelSpec(family=family, path=fixture_path(fixture), device="cpu", settings={"score_threshold": 0.3, "max_faces": 2})
    ).adapter
    assert len(capped.detect([image])[0]) == 2


def test_wrong_model_for_family_names_expected_and_found():
    with pytest.raises(SignatureError) as err:
        load_model(ModelSpec(family="yolov8-face", path=fixture_path("pooled-arcface"), device="cpu"))
    message = str(err.value)
    assert "yolov8-face" in message and "Expected" in message and "Found inputs: input.1[None, 3, 112, 112]" in message


def test_unknown_family_lists_known_ones():
    with pytest.raises(UnknownFamilyError, match="known: .*scrfd.*yolov10.*yolov8-face"):
        family_class("retinaface", role="detector")


def test_settings_typos_are_refused():
    with pytest.raises(Exception, match="score_treshold"):
        load_model(ModelSpec(family="scrfd", path=fixture_path("square-scrfd"), device="cpu", settings={"score_treshold": 0.3}))
