"""``facegraph batch`` on the built pack beside the served graph: rows, resume, the service's answers, enroll by folder."""

import tempfile
from pathlib import Path

import httpx
import numpy as np
import pyarrow.dataset as pads
import pytest

from facegraph.graph.config import FacegraphConfig
from facegraph.models.embedding import similarities
from facegraph.models.geometry import iou
from facegraph.models.imaging import encode_jpeg
from tests.unit.test_imaging import png_header_only
from tests.fixture_models import fixture_path

DATABASE = Path(tempfile.mkdtemp(prefix="facegraph-batch-gallery-")) / "gallery.sqlite3"
# The cheapest pack detector (BlazeFace) and the default recognizer, with the demo classifier as the
# deepfake stage, small enough that the served graph and the job's actor pools fit the test cluster together.
CONFIG = {
    "name": "facegraph",
    "detector": {"model": {"family": "blazeface", "pack": "blazeface"}, "deployment": {"num_replicas": 1, "num_cpus": 0.5}},
    "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier")}, "deployment": {"num_cpus": 0.25}},
    "gallery": {"database": str(DATABASE)},
}
MARK = "archive-q7z"  # a folder name that must reach no log


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("batch") / MARK
    astronaut = data.astronaut()
    pictures = {
        "alice/a1.jpg": encode_jpeg(astronaut, 95),
        "alice/a2.jpg": encode_jpeg(np.ascontiguousarray(astronaut[:, ::-1]), 90),
        "bob/b1.jpg": encode_jpeg(np.pad(astronaut, ((40, 40), (60, 60), (0, 0))), 90),
        "group/two.jpg": encode_jpeg(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1), 90),
        "empty/grey.png": encode_jpeg(np.full((300, 400, 3), 128, np.uint8)),
        "empty/notes.jpg": b"not a picture at all",
        "empty/cut.jpg": encode_jpeg(astronaut)[:3000],
        "empty/bomb.png": png_header_only(60000, 60000),
    }
    for name, content in pictures.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / ".hidden.jpg").write_bytes(b"left out of a folder walk")
    return root


def _run(*args, **kwargs):
    from ray.data import DataContext

    from facegraph.graph.batch.job import run_job

    DataContext.get_current().enable_progress_bars = False
    return run_job(FacegraphConfig.model_validate(CONFIG), *args, **kwargs)


def _rows(dest: Path) -> list[dict]:
    return pads.dataset(str(dest), format="parquet").to_table().to_pylist()


@pytest.fixture(scope="module")
def first_run(serve_app, archive, tmp_path_factory):
    dest = tmp_path_factory.mktemp("out") / "faces"
    return _run(str(archive), str(dest)), dest


def test_rows_per_face_and_per_faceless_or_bad_picture(first_run, archive):
    summary, dest = first_run
    assert (summary.listed, summary.pictures, summary.skipped) == (8, 8, 0)
    assert (summary.faces, summary.no_face, summary.errors) == (5, 1, 3)
    assert set(summary.stage_s) == {"decode", "detect", "recognizer", "deepfake"}
    rows = _rows(dest)
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(str(Path(row["path"]).relative_to(archive)), []).append(row)
    assert sorted(by_path) == ["alice/a1.jpg", "alice/a2.jpg", "bob/b1.jpg", "empty/bomb.png", "empty/cut.jpg", "empty/grey.png", "empty/notes.jpg", "group/two.jpg"]
    assert [r["error_code"] for r in by_path["empty/bomb.png"]] == ["image_too_large"]  # refused from its header
    assert [r["error_code"] for r in by_path["empty/notes.jpg"]] == [r["error_code"] for r in by_path["empty/cut.jpg"]] == ["invalid_image"]
    (grey,) = by_path["empty/grey.png"]
    assert (grey["status"], grey["faces"], grey["width"], grey["height"], grey["embedding"]) == ("no_face", 0, 400, 300, None)
    assert [r["face"] for r in by_path["group/two.jpg"]] == [0, 1] and {r["faces"] for r in by_path["group/two.jpg"]} == {2}
    for row in (r for r in rows if r["status"] == "face"):
        assert len(row["bbox"]) == 4 and 0 < row["score"] <= 1 and len(row["sha256"]) == 64
        assert row["landmark_names"][:2] == ["left_eye", "right_eye"] and len(row["landmarks"]) == 6
        assert len(row["embedding"]) == 128 and row["embedding_space"].startswith("dlib-resnet:")
        assert 0 <= row["fake_probability"] <= 1 and row["deepfake_label"] in ("real", "fake")
        assert row["detector_model"]["family"] == "blazeface" and len(row["detector_model"]["digest"]) == 16
        assert row["recognizer_model"]["digest"] in row["embedding_space"] and row["deepfake_model"]["source"] == fixture_path("rgb-classifier")
    assert by_path["alice/a1.jpg"][0]["width"] == 512 and by_path["bob/b1.jpg"][0]["width"] == 632


def test_the_service_gives_the_same_answers(serve_app, first_run, archive):
    base, _ = serve_app
    _, dest = first_run
    rows = _rows(dest)
    for name in ("alice/a1.jpg", "group/two.jpg"):
        r = httpx.post(f"{base}/v1/analyze", params={"embeddings": "true"}, content=(archive / name).read_bytes(), headers={"content-type": "image/jpeg"}, timeout=60)
        assert r.status_code == 200, r.text
        served = r.json()["faces"]
        batch = sorted((row for row in rows if row["path"] == str(archive / name)), key=lambda row: row["face"])
        assert len(served) == len(batch)
        for face, row in zip(served, batch):
            assert iou([face["bbox"]], [row["bbox"]])[0, 0] > 0.999
            assert float(similarities(np.asarray(face["embedding"]), np.asarray(row["embedding"]))) >= 0.9999
            assert abs(face["deepfake"]["fake_probability"] - row["fake_probability"]) < 1e-3


def test_a_rerun_skips_what_dest_holds_and_redoes_changed_pictures(first_run, archive):
    _, dest = first_run
    (archive / "alice" / "a3.jpg").write_bytes((archive / "alice" / "a1.jpg").read_bytes())  # new path, known content
    (archive / "bob" / "b1.jpg").write_bytes((archive / "alice" / "a2.jpg").read_bytes())  # known path, new content
    summary = _run(str(archive), str(dest))
    assert (summary.listed, summary.pictures, summary.skipped, summary.faces, summary.files) == (9, 2, 7, 2, 1)
    assert len(_rows(dest)) == 9 + 2  # the first run's rows, and the two new pictures' faces


def test_enroll_by_folder_reaches_the_running_service(serve_app, first_run, archive, tmp_path_factory):
    import ray

    base, _ = serve_app
    summary = _run(str(archive), str(tmp_path_factory.mktemp("enrolled") / "rows"), enroll=True)
    # alice: a1, a2, a3; bob: b1; the two-face picture and the face-less or bad ones are reported, not enrolled.
    assert summary.enrolled == {"enrolled": 4, "several_faces": 1, "no_face": 1, "error": 3}
    subjects = httpx.get(f"{base}/v1/subjects", timeout=60).json()["subjects"]
    assert sorted((s["name"], s["faces"]) for s in subjects) == [("alice", 3), ("bob", 1)]
    found = httpx.post(f"{base}/v1/identify", content=(archive / "alice" / "a1.jpg").read_bytes(), headers={"content-type": "image/jpeg"}, timeout=60)
    assert found.status_code == 200, found.text
    assert found.json()["faces"][0]["identity"]["name"] == "alice"  # the very picture is enrolled there
    # Nothing the job read (paths, folder names) reached a log.
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and MARK.encode() in p.read_bytes()]
    assert not leaked


def test_clips_in_the_archive_become_track_and_face_tables(serve_app, tmp_path_factory):
    """A folder of a clip and a picture: the picture's rows in DEST, the clip's tracks and faces in their own tables; a rerun skips both."""
    from skimage import data

    from tests import video_clips

    root = tmp_path_factory.mktemp("clips")
    clip = video_clips.entering_and_leaving("h264")
    (root / "walk.mp4").write_bytes(clip.data)
    (root / "still.jpg").write_bytes(encode_jpeg(data.astronaut(), 90))
    out = tmp_path_factory.mktemp("clip-rows") / "rows"
    summary = _run(str(root), str(out))
    assert summary.pictures == 1 and summary.videos["processed"] == 1 and summary.videos["errors"] == 0
    tracks = pads.dataset(str(out / "video_tracks"), format="parquet").to_table().to_pylist()
    faces = pads.dataset(str(out / "video_faces"), format="parquet").to_table().to_pylist()
    assert tracks and all(t["status"] == "track" and t["path"].endswith("walk.mp4") for t in tracks)
    assert len(faces) == sum(len(t["frames"]) for t in tracks)
    # Every face found where the clip shows the walker whole is hers (at the frame's edges she is partly out of it).
    judged = [(face, clip.at(face["time_s"])) for face in faces]
    judged = [(face, shown) for face, shown in judged if shown]
    assert len(judged) >= len(faces) / 2
    for face, shown in judged:
        assert iou(np.asarray([shown[0].box], np.float32), np.asarray([face["bbox"]], np.float32))[0, 0] > 0.3, face
    assert len(tracks[0]["embedding"]) == 128 and tracks[0]["deepfake_label"] in ("real", "fake")
    again = _run(str(root), str(out))
    assert again.pictures == 0 and again.videos["processed"] == 0
