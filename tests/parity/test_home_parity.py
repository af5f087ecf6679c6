"""Users' own SCRFD and ArcFace files give insightface's answers; YuNet files give cv2.FaceDetectorYN's.

insightface's answers were recorded by ``tests/reference/make_insightface_reference.py`` on
architecture-faithful files rebuilt here from their seeds; OpenCV's run live. Cases on
``../shared/photos`` skip when that folder is absent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facegraph.graph.config import FacegraphConfig
from facegraph.models.geometry import crop_face
from facegraph.models.registry import ModelSpec, load_model
from tests.faithful.home import DETECTORS, PHOTO_NAMES, PHOTOS, RECOGNIZERS, SHUFFLED, reference_pictures
from tests.faithful.yunet import yunet
from tests.fixture_models import fixture_path

DATA = Path(__file__).resolve().parents[1] / "data" / "insightface_reference.npz"
PICTURES = ["astronaut"] + [
    pytest.param(Path(n).stem, marks=pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"{PHOTOS} is absent (real photos for development)"))
    for n in PHOTO_NAMES
]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as data:
        ref = {k: data[k] for k in data.files}
    ref["meta"] = json.loads(str(ref["meta"]))
    return ref


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return reference_pictures()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, reference) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("faithful")
    files = {}
    for prefix, builders in (("det", DETECTORS), ("rec", RECOGNIZERS), ("shuffled", SHUFFLED)):
        for name, build in builders.items():
            blob = build()
            key = f"{prefix}_{name}"
            if prefix != "shuffled":
                recorded = reference["meta"]["models_sha256"][key]
                assert hashlib.sha256(blob).hexdigest() == recorded, f"{key} no longer builds the recorded file: rerun the recorder"
            files[key] = folder / f"{key}.onnx"
            files[key].write_bytes(blob)
    return files


def _check_picture(reference, pictures, picture: str) -> np.ndarray:
    bgr = pictures[picture]
    assert hashlib.sha256(bgr.tobytes()).hexdigest() == reference["meta"]["pictures_sha256"][picture], f"{picture} changed"
    return np.ascontiguousarray(bgr[..., ::-1])


def _assert_same_faces(faces, reference, key: str) -> None:
    """Same count; each reference face has one of ours within 1 px (box and landmarks) and 1e-4 (score)."""
    boxes, scores = reference[f"{key}__boxes"], reference[f"{key}__scores"]
    kps = reference.get(f"{key}__kps")
    assert len(faces) == len(boxes), f"{key}: {len(faces)} faces, insightface {len(boxes)}"
    ours = np.array([f.bbox for f in faces], np.float64).reshape(-1, 4)
    for i in range(len(boxes)):
        j = int(np.argmin(np.abs(ours - boxes[i]).max(axis=1)))
        assert np.abs(ours[j] - boxes[i]).max() <= 1.0, (key, i, ours[j], boxes[i])
        assert abs(faces[j].score - scores[i]) <= 1e-4, (key, i, faces[j].score, scores[i])
        if kps is not None:
            assert faces[j].landmarks is not None and np.abs(faces[j].landmarks - kps[i]).max() <= 1.0, (key, i)
        else:
            assert faces[j].landmarks is None


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("detector", list(DETECTORS))
def test_scrfd_layouts_find_insightface_faces(reference, pictures, model_files, detector, picture):
    rgb = _check_picture(reference, pictures, picture)
    faces = load_model(ModelSpec(family="scrfd", path=str(model_files[f"det_{detector}"]))).adapter.detect([rgb])[0]
    _assert_same_faces(faces, reference, f"detect_{detector}__{picture}")
    if detector in SHUFFLED:
        shuffled = load_model(ModelSpec(family="scrfd", path=str(model_files[f"shuffled_{detector}"]))).adapter
        _assert_same_faces(shuffled.detect([rgb])[0], reference, f"detect_{detector}__{picture}")


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("recognizer", list(RECOGNIZERS))
def test_arcface_embeddings_match_face_analysis(reference, pictures, model_files, recognizer, picture):
    rgb = _check_picture(reference, pictures, picture)
    key = f"analysis_{recognizer}__{picture}"
    detector = load_model(ModelSpec(family="scrfd", path=str(model_files["det_det_10g"]))).adapter
    model = load_model(ModelSpec(family="arcface", path=str(model_files[f"rec_{recognizer}"]))).adapter
    faces = detector.detect([rgb])[0]
    _assert_same_faces(faces, reference, key)
    ours = model.embed([crop_face(rgb, f, model.crop_spec) for f in faces])
    boxes = np.array([f.bbox for f in faces]).reshape(-1, 4)
    for i, want in enumerate(reference[f"{key}__embeddings"].astype(np.float64)):
        j = int(np.argmin(np.abs(boxes - reference[f"{key}__boxes"][i]).max(axis=1)))
        assert float(ours[j] @ want) >= 0.9999, (key, i, float(ours[j] @ want))


def test_arcface_reads_its_normalisation_from_the_graph(model_files):
    plain = load_model(ModelSpec(family="arcface", path=str(model_files["rec_w600k_r50"]))).adapter
    mxnet = load_model(ModelSpec(family="arcface", path=str(model_files["rec_glintr100_mxnet"]))).adapter
    forced = load_model(ModelSpec(family="arcface", path=str(model_files["rec_glintr100_mxnet"]), settings={"input_mean": 127.5, "input_std": 127.5}))
    assert (plain.mean, plain.std) == (127.5, 127.5)
    assert (mxnet.mean, mxnet.std) == (0.0, 1.0)
    assert (forced.adapter.mean, forced.adapter.std) == (127.5, 127.5)


@pytest.mark.parametrize("picture", PICTURES)
def test_a_cap_keeps_insightface_choice(reference, pictures, model_files, picture):
    rgb = _check_picture(reference, pictures, picture)
    spec = ModelSpec(family="scrfd", path=str(model_files["det_det_10g"]), settings={"max_faces": 3})
    _assert_same_faces(load_model(spec).adapter.detect([rgb])[0], reference, f"analysis_cap3__{picture}")


def _opencv_yunet(path: Path, bgr: np.ndarray, score: float, nms: float, top_k: int) -> np.ndarray:
    detector = cv2.FaceDetectorYN.create(str(path), "", (bgr.shape[1], bgr.shape[0]), score, nms, top_k)
    _, faces = detector.detect(bgr)
    return np.zeros((0, 15), np.float32) if faces is None else faces


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("settings", [{}, {"score_threshold": 0.7, "nms_iou": 0.5, "top_k": 20}])
def test_yunet_answers_like_face_detector_yn(tmp_path, pictures, picture, settings):
    path = tmp_path / "face_detection_yunet_2023mar.onnx"
    path.write_bytes(yunet())
    model = load_model(ModelSpec(family="yunet", path=str(path), settings=settings)).adapter
    s = model.settings
    bgr = pictures[picture]
    want = _opencv_yunet(path, bgr, s.score_threshold, s.nms_iou, s.top_k)
    faces = model.detect([np.ascontiguousarray(bgr[..., ::-1])])[0]
    assert len(faces) == len(want)
    # The seeded heads put a few candidates over the default threshold on every photo (not on a 112 px crop).
    assert faces or settings or min(bgr.shape[:2]) <= 112, "the default threshold should find candidates"
    ours = np.array([[*f.bbox[:2], f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1], *f.landmarks.reshape(-1), f.score] for f in faces])
    for row in want:
        j = int(np.argmin(np.abs(ours[:, :4] - row[:4]).max(axis=1)))
        assert np.abs(ours[j, :14] - row[:14]).max() <= 1.0 and abs(ours[j, 14] - row[14]) <= 1e-4, (row, ours[j])


def test_misfits_fail_when_the_config_is_validated(tmp_path):
    no_kps = tmp_path / "det_500m.onnx"
    no_kps.write_bytes(DETECTORS["no_kps"]())
    recognizer = {"model": {"family": "arcface", "path": fixture_path("pooled-arcface")}}
    for detector in ({"family": "scrfd", "path": str(no_kps)}, {"family": "yolov10", "path": fixture_path("square-yolov10")}):
        with pytest.raises(ValueError, match=rf"recognizer 'arcface' .* and detector '{detector['family']}' .* gives none"):
            FacegraphConfig.model_validate({"detector": {"model": detector}, "recognizer": recognizer})
        FacegraphConfig.model_validate({"detector": {"model": detector}, "recognizer": {**recognizer, "box_crops": True}})
    with_kps = tmp_path / "det_10g.onnx"
    with_kps.write_bytes(DETECTORS["det_10g"]())
    FacegraphConfig.model_validate({"detector": {"model": {"family": "scrfd", "path": str(with_kps)}}, "recognizer": recognizer})


def test_unknown_family_lists_that_roles_families():
    with pytest.raises(ValueError) as err:
        FacegraphConfig.model_validate({"detector": {"model": {"family": "retinaface", "path": fixture_path("square-scrfd")}}})
    known = str(err.value).split("known: ")[1].split("\n")[0]
    assert "yunet" in known and "scrfd" in known and "arcface" not in known and "dlib-resnet" not in known


@pytest.fixture(scope="module")
def ultralytics_reference() -> dict:
    with np.load(Path(__file__).resolve().parents[1] / "data" / "yolov8_face_reference.npz", allow_pickle=False) as data:
        ref = {k: data[k] for k in data.files}
    ref["meta"] = json.loads(str(ref["meta"]))
    return ref


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_yolov8_face_answers_like_ultralytics(tmp_path, ultralytics_reference, pictures, picture, dynamic_batch):
    from tests.faithful.yolov8_face import yolov8_face_model

    ref, meta = ultralytics_reference, ultralytics_reference["meta"]
    blob = yolov8_face_model()
    assert hashlib.sha256(blob).hexdigest() == meta["model_sha256"], "the faithful YOLOv8-face model changed: rerun its recorder"
    name = next(n for n in meta["pictures"] if Path(n).stem == picture)
    bgr = pictures[picture]
    assert hashlib.sha256(bgr.tobytes()).hexdigest() == meta["picture_sha256"][name]
    path = tmp_path / "yolov8n-face.onnx"
    path.write_bytes(yolov8_face_model(dynamic_batch=True) if dynamic_batch else blob)
    model = load_model(ModelSpec(family="yolov8-face", path=str(path))).adapter
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    # With a batch axis, two pictures go through in one call and each gets its own answer.
    faces = model.detect([rgb, rgb[: rgb.shape[0] // 2]] if dynamic_batch else [rgb])[0]
    boxes, scores, kpts = ref[f"{name}/boxes"], ref[f"{name}/conf"], ref[f"{name}/kpts"]
    assert len(faces) == len(boxes), (picture, len(faces), len(boxes))
    ours = np.array([f.bbox for f in faces], np.float64).reshape(-1, 4)
    for i in range(len(boxes)):
        j = int(np.argmin(np.abs(ours - boxes[i]).max(axis=1)))
        assert np.abs(ours[j] - boxes[i]).max() <= 1.0, (picture, i, ours[j], boxes[i])
        assert abs(faces[j].score - scores[i]) <= 1e-4
        assert np.abs(faces[j].landmarks - kpts[i]).max() <= 1.0
