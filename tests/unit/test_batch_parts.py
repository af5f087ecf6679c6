"""The bulk job's parts that need no Ray: what a SOURCE lists, pools from deployment settings, enroll statuses."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph.batch.enroll import enroll_status, subject_of
from graph.batch.job import pool_options
from graph.batch.sources import list_pictures
from graph.config import DeploymentConfig


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
