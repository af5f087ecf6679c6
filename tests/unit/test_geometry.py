import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from facegraph.models.errors import MisfitError
from facegraph.models.geometry import (
    ARCFACE_TEMPLATE_112,
    alignment_points,
    batched_nms,
    crop_face,
    cut_by_inner_edge,
    estimate_similarity,
    iou,
    letterbox,
    nms,
    round_up,
    stretch,
    tile_windows,
    weighted_nms,
)
from facegraph.models.types import FIVE_POINTS, CropSpec, Face


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(32, 800), st.integers(32, 800))
def test_letterbox_maps_points_back(w, h, tw, th):
    image = np.zeros((h, w, 3), np.uint8)
    canvas, box = letterbox(image, tw, th)
    assert canvas.shape == (th, tw, 3)
    pts = np.array([[0.0, 0.0], [w, h], [w / 3, h / 2]], np.float32)
    model_pts = np.stack([pts[:, 0] * box.scale_x + box.pad_x, pts[:, 1] * box.scale_y + box.pad_y], axis=1)
    back = box.points_to_original(model_pts)
    assert np.abs(back - pts).max() <= max(w, h) * 0.01 + 1e-3
    boxes = box.boxes_to_original(np.array([[-50, -50, tw + 50, th + 50]], np.float32), w, h)
    assert boxes[0].tolist() == [0, 0, w, h]


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.3])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    inner = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], np.float32)
    assert nms(inner, np.array([0.9, 0.8]), 0.5, mode="min").tolist() == [0]
    assert nms(inner, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """The textbook loop, to check the OpenCV-backed one against."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou(boxes[i], boxes[k])[0, 0] <= threshold for k in keep):
            keep.append(int(i))
    return keep


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_nms_is_the_greedy_loop(count, seed, threshold):
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 200, (count, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 80, (count, 2)).astype(np.float32)], axis=1)
    scores = rng.choice(np.linspace(0.1, 1.0, 7), count).astype(np.float32)  # ties on purpose
    assert nms(boxes, scores, threshold).tolist() == _greedy_nms(boxes, scores, threshold)


def test_batched_nms_never_suppresses_across_groups():
    box = np.array([[10, 10, 50, 50]], np.float32)
    boxes = np.concatenate([box, box + 1, box, box + 1])
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    groups = np.array([0, 0, 1, 1])
    assert sorted(batched_nms(groups, boxes, scores, 0.5).tolist()) == [0, 3]
    assert sorted(batched_nms(groups, boxes, scores, 0.5, mode="min").tolist()) == [0, 3]
    assert batched_nms(np.zeros(0), np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_weighted_nms_averages_each_cluster_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [100, 100, 110, 110]], np.float32)
    scores = np.array([0.6, 0.2, 0.9], np.float32)
    points = np.array([[[5, 5]], [[7, 5]], [[105, 105]]], np.float32)
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, points, 0.3)
    assert out_scores.tolist() == pytest.approx([0.9, 0.6])  # each face keeps its best score
    np.testing.assert_allclose(out_boxes[1], [0.5, 0, 10.5, 10])  # (0.6 * 0 + 0.2 * 2) / 0.8
    np.testing.assert_allclose(out_points[1], [[5.5, 5]])
    np.testing.assert_allclose(out_boxes[0], boxes[2])
    empty = weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)), 0.3)
    assert empty[0].shape == (0, 4) and empty[2].shape == (0, 6, 2)


def test_alignment_fits_the_shared_points_and_refuses_too_few():
    template = FIVE_POINTS + ("mouth_center",)
    assert alignment_points(template, FIVE_POINTS) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    blaze = ("left_eye", "right_eye", "nose", "mouth_center", "left_ear", "right_ear")
    assert alignment_points(template, blaze) == [(0, 0), (1, 1), (2, 2), (5, 3)]
    with pytest.raises(MisfitError, match="both eyes.*the detector gives left_eye, nose"):
        alignment_points(template, ("left_eye", "nose", "mouth_center"))
    # A crop spec on points the face lacks fails loudly instead of warping on the wrong points.
    face = Face((0, 0, 10, 10), 1.0, np.zeros((2, 2), np.float32), points=("left_eye", "right_eye"))
    with pytest.raises(MisfitError):
        crop_face(np.zeros((20, 20, 3), np.uint8), face, CropSpec("landmarks", (112, 112), ARCFACE_TEMPLATE_112))


@settings(max_examples=80, deadline=None)
@given(st.floats(-np.pi, np.pi), st.floats(0.2, 5.0), st.floats(-500, 500), st.floats(-500, 500))
def test_similarity_recovers_a_known_transform(angle, scale, tx, ty):
    src = np.array(ARCFACE_TEMPLATE_112)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + [tx, ty]
    matrix = estimate_similarity(src, dst)
    assert np.allclose(matrix[:, :2], rot, atol=1e-6) and np.allclose(matrix[:, 2], [tx, ty], atol=1e-4)


def test_aligned_crop_puts_landmarks_on_the_template():
    template = np.array(ARCFACE_TEMPLATE_112)
    # Landmarks of a face rotated by 20 degrees, scaled 2.5x, somewhere in a big picture.
    angle = np.deg2rad(20)
    rot = 2.5 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = template @ rot.T + [300, 200]
    image = np.zeros((800, 800, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    crop = crop_face(image, Face((0, 0, 1, 1), 1.0, landmarks.astype(np.float32)), CropSpec("landmarks", (112, 112), ARCFACE_TEMPLATE_112))
    assert crop.shape == (112, 112, 3)
    for x, y in template:
        assert crop[int(round(y)), int(round(x))].max() > 128


def test_box_crop_without_landmarks_is_square_with_margin():
    image = np.zeros((300, 300, 3), np.uint8)
    image[100:200, 120:180] = 255  # a 60x100 box
    crop = crop_face(image, Face((120, 100, 180, 200), 1.0, None), CropSpec("box", (100, 100), margin=0.0))
    # Squared about the centre: side 100, so the bright part spans 60 of 100 columns.
    assert crop.shape == (100, 100, 3)
    bright_cols = np.where(crop[50, :, 0] > 128)[0]
    assert abs(len(bright_cols) - 60) <= 2 and abs(bright_cols.mean() - 49.5) <= 1.5


def test_iou():
    assert np.allclose(iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]), [[1.0, 1 / 3, 0.0]])


def test_windows_cover_the_picture_with_overlap():
    windows = tile_windows(1000, 600, 2, 0.625)
    assert windows[0] == (0, 0, 1000, 600)
    assert windows[1:] == [(0, 0, 625, 375), (375, 0, 1000, 375), (0, 225, 625, 600), (375, 225, 1000, 600)]
    three = tile_windows(1000, 600, 3, 0.5)
    assert len(three) == 10 and three[-1] == (500, 300, 1000, 600)


def test_a_tile_drops_the_faces_its_inner_edges_cut():
    window = (0, 0, 625, 375)  # the top-left tile of a 1000 x 600 picture: its right and bottom edges are inside it
    boxes = np.array([[10, 10, 60, 60], [590, 10, 640, 60], [10, 350, 60, 400], [0, 0, 50, 50]], np.float32)
    assert cut_by_inner_edge(boxes, window, 1000, 600, 0.2).tolist() == [False, True, True, False]
    # The picture's own edges cut nothing: the whole picture as its window keeps every face.
    assert not cut_by_inner_edge(boxes, (0, 0, 1000, 600), 1000, 600, 0.2).any()


def test_stretch_scales_each_axis_on_its_own_and_maps_back():
    image = np.zeros((100, 50, 3), np.uint8)
    image[40:60, 20:30] = 255
    out, box = stretch(image, 64, 96)
    assert out.shape == (96, 64, 3) and (box.scale_x, box.scale_y, box.pad_x, box.pad_y) == (64 / 50, 96 / 100, 0.0, 0.0)
    np.testing.assert_allclose(box.boxes_to_original(np.array([[25.6, 38.4, 38.4, 57.6]]), 50, 100), [[20, 40, 30, 60]], atol=1e-4)
    same, unit = stretch(image, 50, 100)
    assert same is image and unit.scale_x == unit.scale_y == 1.0  # already that size: no resize, no copy


def test_round_up_to_a_multiple():
    assert [round_up(v, 32) for v in (1, 32, 33, 600, 640)] == [32, 32, 64, 608, 640]
