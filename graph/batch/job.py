"""``facegraph batch``: a picture archive through the graph's models on Ray Data, into parquet.

read (Ray tasks) -> decode + detect (actor pool of the detector, which decodes as the Serve
detector does; ``batch.decode_in: tasks`` decodes in the reading tasks instead) -> recognizer,
deepfake (actor pools, batches of crops) -> [gallery writer] -> parquet. Each model stage's pool is its Serve deployment's settings
from the same config: replicas (or autoscaling's min and max) as the pool size, CPU and GPU shares
and custom resources per actor, ``batching.max_batch_size`` as rows per call.
"""

from __future__ import annotations

import functools
import posixpath
import time
from dataclasses import dataclass, field

import pyarrow.compute as pc

from facegraph.graph.batch.enroll import EnrollStage
from facegraph.graph.batch.sources import Location, done_keys, list_pictures, locate, parquet_files, read_rows
from facegraph.graph.batch.videos import VideoStage, face_rows, is_video, tables
from facegraph.graph.batch.stages import ClassifyStage, DetectStage, EmbedStage, read_pictures
from facegraph.graph.config import DeploymentConfig, FacegraphConfig
from facegraph.graph.core.stages import load_stage
from facegraph.models.types import CropSpec

STAGE_COLUMNS = {"decode": "decode_ms", "detect": "detect_ms", "recognizer": "recognizer_ms", "deepfake": "deepfake_ms", "enroll": "enroll_ms"}


@dataclass
class Summary:
    """What one run did: pictures it processed (skipped ones aside), rows by kind, time per stage."""

    listed: int
    skipped: int
    pictures: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    seconds: float = 0.0
    # Busy seconds per stage, summed over its actors or tasks.
    stage_s: dict[str, float] = field(default_factory=dict)
    # Pictures per enroll status ("enrolled", "no_face", "several_faces", "error"); None when not enrolling.
    enrolled: dict[str, int] | None = None
    files: int = 0
    # Clips: listed, processed, track rows, clips with no face, clips with an error (None: no clip listed).
    videos: dict[str, int] | None = None

    @property
    def pictures_per_s(self) -> float:
        return self.pictures / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"pictures: {self.pictures} processed, {self.skipped} skipped (already in DEST with the same content), {self.listed} listed",
            f"rows: {self.faces} faces, {self.no_face} pictures without a face, {self.errors} pictures with an error",
            f"time: {self.seconds:.1f} s, {self.pictures_per_s:.2f} pictures/s",
            "busy time per stage: " + ", ".join(f"{k} {v:.1f} s ({1000 * v / max(self.pictures, 1):.1f} ms/picture)" for k, v in self.stage_s.items()),
        ]
        if self.videos is not None:
            v = self.videos
            out.append(
                f"clips: {v['processed']} processed, {v['listed'] - v['processed']} skipped; {v['tracks']} tracks, "
                f"{v['no_face']} clips without a face, {v['errors']} with an error (tables video_tracks/ and video_faces/)"
            )
        if self.enrolled is not None:
            out.append("enroll by folder (pictures): " + ", ".join(f"{k} {v}" for k, v in sorted(self.enrolled.items())))
        return out


def pool_options(deployment: DeploymentConfig) -> dict:
    """A Serve deployment's settings as Ray Data ``map_batches`` options for its actor pool."""
    from ray.data import ActorPoolStrategy

    autoscaling = deployment.autoscaling_config
    if autoscaling is not None:
        low = max(1, int(autoscaling.get("min_replicas", 1)))
        pool = ActorPoolStrategy(min_size=low, max_size=max(low, int(autoscaling.get("max_replicas", 1))))
    else:
        pool = ActorPoolStrategy(size=max(1, deployment.num_replicas or 1))
    options = {"compute": pool, "num_cpus": deployment.num_cpus, "num_gpus": deployment.num_gpus, "batch_size": deployment.batching.max_batch_size}
    if deployment.resources:
        options["resources"] = dict(deployment.resources)
    return options


def crop_specs(config: FacegraphConfig) -> dict[str, CropSpec]:
    """The crops each configured branch takes: its model's own ``crop_spec``, the model loaded once here on the CPU.

    The Serve graph asks its live branch replicas the same question (``graph.core.analysis``).
    """
    branches = {stage: getattr(config, stage) for stage in ("recognizer", "deepfake")}
    return {stage: load_stage(c.model, stage, config.cache_dir()).adapter.crop_spec for stage, c in branches.items() if c is not None}


def build_dataset(config: FacegraphConfig, fs, paths: list[str], done: frozenset, enroll: bool):
    """The job as a lazy Ray Data dataset of output rows."""
    import ray.data
    from ray.data import ActorPoolStrategy

    cache, task_cpus = config.cache_dir(), config.batch.task_num_cpus
    # The paths are listed here, the files read in the reading tasks: one that cannot be read is its error row.
    blocks = max(1, min(-(-len(paths) // config.batch.read_batch_size), 2000))  # a reading batch each, to feed every pool
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    ds = ds.map_batches(
        functools.partial(read_pictures, fs=fs, done=done, max_pixels=config.ingress.max_pixels, decode=config.batch.decode_in == "tasks"),
        batch_format="pyarrow",
        batch_size=config.batch.read_batch_size,
        num_cpus=task_cpus,
    )
    ds = ds.map_batches(
        DetectStage,
        fn_constructor_args=(config.detector.model, cache, crop_specs(config), config.ingress.max_pixels),
        batch_format="pyarrow",
        **pool_options(config.detector.deployment),
    )
    for stage, cls in (("recognizer", EmbedStage), ("deepfake", ClassifyStage)):
        stage_config = getattr(config, stage)
        if stage_config is not None:
            ds = ds.map_batches(
                cls, fn_constructor_args=(stage_config.model, cache), batch_format="pyarrow", **pool_options(stage_config.deployment)
            )
    if enroll:
        gallery = config.gallery.deployment
        ds = ds.map_batches(
            EnrollStage,
            fn_constructor_args=(config,),
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=1),  # one writer: SQLite takes one at a time
            num_cpus=gallery.num_cpus,
            batch_size=gallery.batching.max_batch_size,
            **({"resources": dict(gallery.resources)} if gallery.resources else {}),
        )
    return ds


def summarise(dest: Location, files: list[str], summary: Summary, enroll: bool) -> Summary:
    columns = ["path", "status"] + list(STAGE_COLUMNS.values())
    table = read_rows(dest, files, columns + (["enroll_status"] if enroll else []))
    summary.files = len(files)
    if table is None:
        return summary
    per_picture = table.group_by("path").aggregate([("status", "min")] + ([("enroll_status", "max")] if enroll else []))
    statuses = per_picture.column("status_min").to_pylist()  # every row of a picture carries its status
    summary.pictures = per_picture.num_rows
    summary.faces = int(pc.sum(pc.equal(table.column("status"), "face")).as_py() or 0)
    summary.no_face, summary.errors = statuses.count("no_face"), statuses.count("error")
    for stage, column in STAGE_COLUMNS.items():
        busy = pc.sum(table.column(column)).as_py()
        if busy is not None:
            summary.stage_s[stage] = busy / 1000
    if enroll:
        found = per_picture.column("enroll_status_max").to_pylist()
        summary.enrolled = {status: found.count(status) for status in sorted(set(found))}
    return summary


def run_job(config: FacegraphConfig, source: str, out: str, enroll: bool = False) -> Summary:
    """Run the job on the connected Ray cluster; pictures and clips DEST already holds (same path and content) are skipped."""
    if enroll and config.gallery_store() is None:
        raise ValueError("--enroll-by-folder needs a recognizer and a gallery in the config")
    fs, listed = list_pictures(source)
    videos = [p for p in listed if is_video(p)]
    paths = [p for p in listed if not is_video(p)]
    dest = locate(out)
    done = done_keys(dest)
    before = set(_picture_files(dest))
    summary = Summary(listed=len(paths), skipped=0)
    started = time.perf_counter()
    if paths:
        dataset = build_dataset(config, fs, paths, done, enroll)
        dataset.write_parquet(dest.path, filesystem=dest.fs, ray_remote_args={"num_cpus": config.batch.task_num_cpus})
    if videos:
        summary.videos = run_videos(config, fs, videos, dest)
    summary.seconds = time.perf_counter() - started
    summarise(dest, [f for f in _picture_files(dest) if f not in before], summary, enroll)
    summary.skipped = summary.listed - summary.pictures
    return summary


def _picture_files(dest: Location) -> list[str]:
    """DEST's picture rows: its own parquet files, not the clips' tables in its subfolders."""
    return [f for f in parquet_files(dest) if posixpath.dirname(f) == dest.path.rstrip("/")]


def run_videos(config: FacegraphConfig, fs, paths: list[str], dest: Location) -> dict[str, int]:
    """Clips -> DEST/video_tracks (a row per track) and DEST/video_faces (a row per face per sampled frame)."""
    import ray.data

    tracks, faces = tables(dest)
    before = set(parquet_files(tracks))
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
    ds = ds.map_batches(
        VideoStage, fn_constructor_args=(config, fs, done_keys(tracks)), batch_format="pyarrow",
        **{**pool_options(config.detector.deployment), "batch_size": 1},
    ).materialize()  # fmt: skip
    remote = {"num_cpus": config.batch.task_num_cpus}
    ds.drop_columns(["faces"]).write_parquet(tracks.path, filesystem=dest.fs, ray_remote_args=remote)
    ds.map_batches(face_rows, batch_format="pyarrow").write_parquet(faces.path, filesystem=dest.fs, ray_remote_args=remote)
    table = read_rows(tracks, [f for f in parquet_files(tracks) if f not in before], ["path", "status"])
    statuses = [] if table is None else table.column("status").to_pylist()
    clips = set() if table is None else set(table.column("path").to_pylist())
    return {"listed": len(paths), "processed": len(clips), "tracks": statuses.count("track"), "no_face": statuses.count("no_face"), "errors": statuses.count("error")}
