"""dlib's ResNet converted by our code: the file reader, network parity with dlib, our pipeline against dlib's.

Reference values: ``tests/data/dlib_reference.npz`` from ``tests/reference/make_dlib_reference.py``
(dlib's own network, HOG detector, 5-point shape predictor and face chips).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from facegraph.models.dlib_resnet import CHIP_SIZE, chip_template
from facegraph.models.errors import ModelLoadError, SignatureError
from facegraph.models.geometry import crop_face, dlib_chip_matrix
from facegraph.models.pack.dlib_weights import MODEL_MEMBER, DlibStream, read_layers, read_member
from facegraph.models.registry import ModelSpec, load_model
from facegraph.models.types import CropSpec, Face
from tests.mtcnn_pack import astronaut_variants
from tests.pack import load_pack, source_distribution
from tests.fixture_models import fixture_path

DATA = Path(__file__).resolve().parents[1] / "data"
PICTURES = ("astronaut", "camera")
# dlib's own 5-point chip template (get_face_chip_details, unit square), in its predictor's point order.
DLIB_5PT = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677), (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242), (0.4901123135679, 0.6277975316475))


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "dlib_reference.npz") as npz:
        out = {k: npz[k] for k in npz.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


@pytest.fixture(scope="module")
def recognizer():
    return load_pack("dlib-resnet", "dlib-resnet").adapter


@pytest.fixture(scope="module")
def detector():
    return load_pack("mtcnn", "mtcnn").adapter


def picture(name: str) -> np.ndarray:
    return data.astronaut() if name == "astronaut" else np.stack([data.camera()] * 3, axis=-1)


def embed_picture(detector, recognizer, image):
    (faces,) = detector.detect([image])
    assert len(faces) == 1
    return recognizer.embed([crop_face(image, faces[0], recognizer.crop_spec)])[0]


def dlib_chip_spec() -> CropSpec:
    template = tuple(((0.25 + x) / 1.5 * CHIP_SIZE, (0.25 + y) / 1.5 * CHIP_SIZE) for x, y in DLIB_5PT)
    return CropSpec("landmarks", (CHIP_SIZE, CHIP_SIZE), template, convention="dlib")


def test_stream_reads_dlibs_encodings():
    # -0x1234 as control byte (negative, 2 bytes) + little-endian magnitude; 3 * 2**-1; '1'; "ab".
    stream = DlibStream(bytes([0x82, 0x34, 0x12, 0x01, 0x03, 0x81, 0x01]) + b"1" + bytes([0x01, 0x02]) + b"ab")
    assert stream.int() == -0x1234
    assert stream.float() == 1.5
    assert stream.bool() is True
    assert stream.string() == "ab"
    assert stream.pos == len(stream.data)


def test_reader_refuses_a_damaged_file():
    model = read_member(source_distribution("dlib-resnet"), MODEL_MEMBER)
    with pytest.raises(ModelLoadError, match="byte"):
        read_layers(model[:-1000])
    damaged = model.replace(b"affine_", b"affinX_", 1)
    with pytest.raises(ModelLoadError, match="affine"):
        read_layers(damaged)


def test_network_matches_dlib_on_the_same_chips(recognizer, reference):
    random_chip = reference["random_chip"]
    assert hashlib.sha256(random_chip.tobytes()).hexdigest() == reference["meta"]["random_chip_sha256"]
    ours = recognizer.embed([random_chip, reference["astronaut_chip"], reference["camera_chip"]])
    assert ours.shape == (3, 128) and ours.dtype == np.float32
    assert np.abs(ours[0] - reference["random_chip_descriptor"]).max() < 1e-4
    for got, name in zip(ours[1:], PICTURES):
        assert np.abs(got - reference[f"{name}_chip_descriptor"]).max() < 1e-4, name


@pytest.mark.parametrize("name", PICTURES)
def test_chip_geometry_reproduces_dlibs_own_chip(recognizer, reference, name):
    # dlib's 5 points with dlib's 5-point template, cut by our crop_face in dlib's convention.
    spec = dlib_chip_spec()
    shape5 = reference[f"{name}_shape5"].astype(np.float64)
    chip_to_image = dlib_chip_matrix(shape5, np.asarray(spec.template), CHIP_SIZE)
    left, top, right, bottom = reference[f"{name}_chip_rect"]
    scale = float(np.sqrt(abs(np.linalg.det(chip_to_image[:, :2]))))
    centre = chip_to_image[:, :2] @ np.full(2, (CHIP_SIZE - 1) / 2) + chip_to_image[:, 2]
    assert scale * (CHIP_SIZE - 1) == pytest.approx(right - left, abs=1e-6)
    assert centre == pytest.approx([(left + right) / 2, (top + bottom) / 2], abs=1e-6)
    assert np.arctan2(chip_to_image[1, 0], chip_to_image[0, 0]) == pytest.approx(float(reference[f"{name}_chip_angle"]), abs=1e-9)
    chip = crop_face(picture(name), Face((0, 0, 1, 1), 1.0, shape5), spec)
    assert np.abs(chip.astype(int) - reference[f"{name}_chip"].astype(int)).mean() < 1.0
    assert np.linalg.norm(recognizer.embed([chip])[0] - reference[f"{name}_pipeline_descriptor"]) < 0.02


def test_template_driven_by_recorded_detector_points(recognizer, reference):
    # The 5 points the mtcnn package's own (TensorFlow) pipeline gave for the astronaut,
    # recorded by make_mtcnn_reference.py: independent of our MTCNN conversion.
    with np.load(DATA / "mtcnn_reference.npz") as npz:
        row = npz["detections_original"][0]
    points = np.stack([row[5:10], row[10:15]], axis=1)
    chip = crop_face(data.astronaut(), Face(tuple(row[:4]), float(row[4]), points), recognizer.crop_spec)
    distance = float(np.linalg.norm(recognizer.embed([chip])[0] - reference["astronaut_pipeline_descriptor"]))
    # Measured 0.125: MTCNN's points (pupils, nose tip) are not dlib's (eye corners, nose base).
    assert distance < 0.15, distance


def test_our_pipeline_close_to_dlibs_own(detector, recognizer, reference):
    ours = embed_picture(detector, recognizer, data.astronaut())
    distance = float(np.linalg.norm(ours - reference["astronaut_pipeline_descriptor"]))
    # Measured 0.125, as with the mtcnn package's own points above.
    assert distance < 0.15, distance


def test_dlibs_own_pipeline_tells_the_two_people_apart(reference, recognizer):
    distance = np.linalg.norm(reference["astronaut_pipeline_descriptor"] - reference["camera_pipeline_descriptor"])
    assert distance > recognizer.match_threshold  # measured 0.84


def test_same_person_across_copies_and_another_person_apart(detector, recognizer):
    variants = astronaut_variants()
    original = embed_picture(detector, recognizer, variants.pop("original")[0])
    for name, (image, _) in variants.items():
        distance = float(np.linalg.norm(embed_picture(detector, recognizer, image) - original))
        assert distance < recognizer.match_threshold, (name, distance)
    camera = embed_picture(detector, recognizer, picture("camera"))
    assert float(np.linalg.norm(camera - original)) > recognizer.match_threshold


def test_template_and_signature():
    template = np.array(chip_template())
    assert template.shape == (5, 2)
    assert template[0, 0] < template[2, 0] < template[1, 0]  # left eye, nose, right eye
    assert template[3, 0] < template[4, 0] and template[2, 1] < template[3, 1]  # mouth corners below the nose
    with pytest.raises(SignatureError, match="dlib-resnet"):
        load_model(ModelSpec(family="dlib-resnet", path=fixture_path("pooled-arcface"), device="cpu"))
