"""The bulk job's parts that need no Ray: what a SOURCE lists, pools from deployment settings, enroll statuses."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facegraph.graph.batch.enroll import enroll_status, subject_of
from facegraph.graph.batch.job import pool_options
from facegraph.graph.batch.sources import list_pictures
from facegraph.graph.config import DeploymentConfig
from tests.fixture_models import fixture_path


def test_a_folder_is_walked_recursively_without_hidden_files(tmp_path):
    for name in ("a/1.jpg", "a/b/2.png", "3.txt", ".DS_Store", ".cache/4.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    _, paths = list_pictures(str(tmp_path))
    assert paths == [str(tmp_path / p) for p in ("3.txt", "a/1.jpg", "a/b/2.png")]


def test_manifests_list_paths_relative_to_themselves(tmp_path):
    (tmp_path / "list.txt").write_text("# archive\nx/1.jpg\n\n/abs/2.jpg\n")
    assert list_pictures(str(tmp_path / "list.txt"))[1] == ["/abs/2.jpg", str(tmp_path / "x/1.jpg")]
    pq.write_table(pa.table({"path": ["y/3.jpg", "/abs/4.jpg"], "other": [1, 2]}), tmp_path / "list.parquet")
    assert list_pictures(str(tmp_path / "list.parquet"))[1] == ["/abs/4.jpg", str(tmp_path / "y/3.jpg")]
    (tmp_path / "one.jpg").write_bytes(b"x")
    assert list_pictures(str(tmp_path / "one.jpg"))[1] == [str(tmp_path / "one.jpg")]
    with pytest.raises(FileNotFoundError):
        list_pictures(str(tmp_path / "absent"))


def test_actor_pools_follow_the_deployment_settings():
    fixed = pool_options(DeploymentConfig(num_replicas=3, num_cpus=0.5, num_gpus=0.25, resources={"facegraph_gallery": 1}))
    assert (fixed["compute"].min_size, fixed["compute"].max_size) == (3, 3)
    assert (fixed["num_cpus"], fixed["num_gpus"], fixed["batch_size"], fixed["resources"]) == (0.5, 0.25, 8, {"facegraph_gallery": 1})
    scaled = pool_options(DeploymentConfig(autoscaling_config={"min_replicas": 0, "max_replicas": 4}))
    assert (scaled["compute"].min_size, scaled["compute"].max_size) == (1, 4) and "resources" not in scaled


def test_enroll_takes_one_face_pictures_and_names_subjects_by_folder():
    assert subject_of("/archive/people/Ada Lovelace/01.jpg") == "Ada Lovelace"
    assert enroll_status({"status": "face", "faces": 1, "embedding": [0.1]}) == "enrolled"
    assert enroll_status({"status": "face", "faces": 2, "embedding": [0.1]}) == "several_faces"
    assert enroll_status({"status": "no_face", "faces": 0, "embedding": None}) == "no_face"
    assert enroll_status({"status": "error", "faces": 0, "embedding": None}) == "error"
    # The service's eye-distance floor: a face whose eyes are 12 px apart is not enrolled.
    small = {"status": "face", "faces": 1, "embedding": [0.1], "landmarks": [[10, 10], [22, 10]], "landmark_names": ["left_eye", "right_eye"]}
    assert enroll_status(small, 20.0) == "low_quality" and enroll_status(small, None) == "enrolled"
    assert enroll_status({**small, "landmarks": [[10, 10], [40, 10]]}, 20.0) == "enrolled"


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """The job's stages run in this process on fixture models, as an actor pool runs them."""
    from facegraph.graph.batch.job import crop_specs
    from facegraph.graph.batch.stages import ClassifyStage, DetectStage, EmbedStage
    from facegraph.graph.config import FacegraphConfig

    config = FacegraphConfig.model_validate(
        {
            "model_cache": str(tmp_path_factory.mktemp("cache")),
            "detector": {"model": {"family": "scrfd", "path": fixture_path("square-scrfd"), "device": "cpu", "settings": {"score_threshold": 0.3}}},
            "recognizer": {"model": {"family": "arcface", "path": fixture_path("pooled-arcface"), "device": "cpu"}},
            "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier"), "device": "cpu"}},
        }
    )
    cache = config.cache_dir()
    detect = DetectStage(config.detector.model, cache, crop_specs(config), 4_000_000)
    return [detect, EmbedStage(config.recognizer.model, cache), ClassifyStage(config.deepfake.model, cache)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.fixture_models import draw_squares
    from facegraph.models.imaging import encode_jpeg
    from tests.unit.test_imaging import png_header_only

    root = tmp_path_factory.mktemp("pictures")
    pictures = {
        "two.png": _png(draw_squares(640, 400, [(50, 60, 150, 160), (300, 100, 420, 220)], seed=1)),
        "one.jpg": encode_jpeg(draw_squares(300, 500, [(40, 60, 140, 160)], seed=2), 95),
        "none.png": _png(draw_squares(200, 100, [])),
        "text.jpg": b"not a picture",
        "bomb.png": png_header_only(5000, 5000),
    }
    for name, content in pictures.items():
        (root / name).write_bytes(content)
    return root


def _png(image) -> bytes:
    import cv2

    return cv2.imencode(".png", image[:, :, ::-1])[1].tobytes()


def _job_rows(stages, folder, decode: bool, done=frozenset()) -> list[dict]:
    from facegraph.graph.batch.stages import read_pictures

    fs, paths = list_pictures(str(folder))
    table = read_pictures(pa.table({"path": paths + [str(folder / "gone.jpg")]}), fs=fs, done=done, max_pixels=4_000_000, decode=decode)
    for stage in stages:
        table = stage(table)
    return table.to_pylist()


def test_decoding_in_the_detector_or_in_the_reading_tasks_gives_the_same_rows(stages, folder):
    from facegraph.graph.batch.rows import OUTPUT

    in_detector, in_tasks = _job_rows(stages, folder, decode=False), _job_rows(stages, folder, decode=True)
    timings = ("decode_ms", "detect_ms", "recognizer_ms", "deepfake_ms")
    assert [{k: v for k, v in r.items() if k not in timings} for r in in_detector] == [{k: v for k, v in r.items() if k not in timings} for r in in_tasks]
    assert list(in_detector[0]) == OUTPUT.names  # the crops were dropped by the branches that used them
    by_name = {}
    for row in in_detector:
        by_name.setdefault(row["path"].rsplit("/", 1)[1], []).append(row)
    assert [(r["status"], r["face"], r["width"], r["height"]) for r in by_name["two.png"]] == [("face", 0, 640, 400), ("face", 1, 640, 400)]
    assert [(r["status"], r["faces"], r["width"]) for r in by_name["one.jpg"]] == [("face", 1, 300)]
    assert [(r["status"], r["width"], r["height"], r["embedding"]) for r in by_name["none.png"]] == [("no_face", 200, 100, None)]
    assert [(r["status"], r["error_code"]) for r in by_name["text.jpg"] + by_name["bomb.png"] + by_name["gone.jpg"]] == [
        ("error", "invalid_image"),
        ("error", "image_too_large"),
        ("error", "unreadable"),
    ]
    assert by_name["gone.jpg"][0]["sha256"] is None and by_name["text.jpg"][0]["detector_model"] is None  # no picture for it to run on
    assert by_name["one.jpg"][0]["detector_model"]["family"] == "scrfd"
    for row in by_name["two.png"] + by_name["one.jpg"]:
        assert len(row["embedding"]) == 32 and 0 <= row["fake_probability"] <= 1 and row["decode_ms"] > 0 and row["detect_ms"] >= 0


def test_pictures_dest_holds_are_not_read_again(stages, folder):
    import hashlib

    done = frozenset({(str(folder / "one.jpg"), hashlib.sha256((folder / "one.jpg").read_bytes()).hexdigest()), (str(folder / "two.png"), "another content")})
    names = {row["path"].rsplit("/", 1)[1] for row in _job_rows(stages, folder, decode=False, done=done)}
    assert names == {"two.png", "none.png", "text.jpg", "bomb.png", "gone.jpg"}


def test_clips_become_a_row_per_track_and_a_row_per_face(tmp_path):
    """facegraph batch on clips, without Ray: the video stage on fixture models, as its actor pool runs it."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    from facegraph.benchmarks.video_decode import encode
    from facegraph.graph.batch.videos import TRACK, VideoStage, face_rows
    from facegraph.graph.config import FacegraphConfig
    from tests.fixture_models import draw_squares

    config = FacegraphConfig.model_validate(
        {
            "detector": {"model": {"family": "scrfd", "path": fixture_path("square-scrfd"), "device": "cpu", "settings": {"score_threshold": 0.3}}},
            "recognizer": {"model": {"family": "arcface", "path": fixture_path("pooled-arcface"), "device": "cpu"}},
            "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier"), "device": "cpu"}},
        }
    )
    # Two squares drifting apart for 3 s at 10 fps: sampled at 2 fps, 6 frames.
    frames = [draw_squares(320, 192, [(20 + 8 * k, 20, 60 + 8 * k, 60), (260 - 8 * k, 120, 300 - 8 * k, 160)]) for k in range(30)]
    (tmp_path / "two.mp4").write_bytes(encode(frames, "h264", fps=10))
    (tmp_path / "empty.webm").write_bytes(encode([draw_squares(320, 192, [])] * 10, "vp9", fps=10))
    (tmp_path / "notes.mp4").write_bytes(b"not a clip\n" * 100)
    paths = [str(tmp_path / n) for n in ("two.mp4", "empty.webm", "notes.mp4", "gone.mkv")]
    stage = VideoStage(config, pafs.LocalFileSystem(), frozenset())
    rows = stage(pa.table({"path": paths})).to_pylist()
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert [r["track_id"] for r in by_status["track"]] == [0, 1] and {r["path"] for r in by_status["track"]} == {paths[0]}
    for track in by_status["track"]:
        assert track["frames"] == list(range(6)) and len(track["faces"]) == 6 and track["best"] in track["faces"]
        assert len(track["embedding"]) == 32 and track["embedding_space"].startswith("arcface:") and track["deepfake_label"] in ("real", "fake")
        assert track["detector_model"]["family"] == "scrfd" and track["sampled_frames"] == 6
    assert [r["path"] for r in by_status["no_face"]] == [paths[1]]
    assert sorted((r["path"], r["error_code"]) for r in by_status["error"]) == [(paths[3], "unreadable"), (paths[2], "invalid_video")]
    faces = face_rows(pa.Table.from_pylist(rows, schema=TRACK))
    assert faces.num_rows == 12 and set(faces.column("track_id").to_pylist()) == {0, 1}
    # A rerun skips what DEST holds: the same path with the same content.
    done = frozenset((r["path"], r["sha256"]) for r in rows if r["sha256"])
    again = VideoStage(config, pafs.LocalFileSystem(), done)(pa.table({"path": paths})).to_pylist()
    assert [r["path"] for r in again] == [paths[3]]  # only the file that could not be read
