"""The one configuration schema. Serve config YAMLs under ``cluster/`` carry it as ``args``.

This is the only module that reads environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from facegraph.models.errors import MisfitError, UnknownFamilyError
from facegraph.models.geometry import alignment_points
from facegraph.models.imaging import DEFAULT_MAX_PIXELS
from facegraph.models.video import VideoLimits
from facegraph.models.registry import ModelSpec, detector_landmarks, family_class

ENV_CACHE = "FACEGRAPH_CACHE"
ENV_API_KEYS = "FACEGRAPH_API_KEYS"
ENV_DATA = "FACEGRAPH_DATA"
ENV_GALLERY_DSN = "FACEGRAPH_GALLERY_DSN"


def default_cache_dir() -> Path:
    """Model cache: ``$FACEGRAPH_CACHE``, else ``$XDG_CACHE_HOME/facegraph``, else ``~/.cache/facegraph``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "facegraph"


def default_data_dir() -> Path:
    """Persistent data (the gallery): ``$FACEGRAPH_DATA``, else ``$XDG_DATA_HOME/facegraph``, else ``~/.local/share/facegraph``."""
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "facegraph"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(_Strict):
    """``@serve.batch`` knobs; changeable at run time through ``user_config``."""

    max_batch_size: int = Field(8, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=10)


class DeploymentConfig(_Strict):
    """Ray Serve options for one deployment."""

    num_replicas: int | None = Field(1, ge=0)
    autoscaling_config: dict[str, Any] | None = None
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Custom Ray resources, e.g. {facegraph_gallery: 1} to pin the gallery to the node with its disk.
    resources: dict[str, float] = {}
    # Default: twice the batch size, so a batch can fill while another runs.
    max_ongoing_requests: int | None = Field(None, ge=1)
    # Beyond this many queued requests per handle, callers get back-pressure (HTTP 503).
    max_queued_requests: int = Field(-1, ge=-1)
    batching: Batching = Batching()
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_timeout_s: float = 20.0

    @model_validator(mode="after")
    def _checks(self):
        if self.autoscaling_config is not None:
            self.num_replicas = None
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.batching.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) is below max_batch_size "
                f"({self.batching.max_batch_size}): batches could never fill"
            )
        return self

    def serve_options(self, batched: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``; ``batched``: its ``batching`` as the replica's ``user_config``."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **({"resources": dict(self.resources)} if self.resources else {})},
            "max_ongoing_requests": self.max_ongoing_requests or max(2 * self.batching.max_batch_size, 8),
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config
        else:
            options["num_replicas"] = self.num_replicas
        if batched:
            options["user_config"] = self.batching.model_dump()
        return options


class StageConfig(_Strict):
    """A model and the deployment that serves it."""

    model: ModelSpec
    deployment: DeploymentConfig = DeploymentConfig()
    # Recognizer only: accept faces cut from their boxes when the detector gives no landmarks
    # (embeddings of unaligned crops are not comparable with aligned ones; off by default).
    box_crops: bool = False


# The route that takes clips, with a body limit of its own.
VIDEO_PATH = "/v1/analyze/video"


class IngressConfig(_Strict):
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.25, max_ongoing_requests=64)
    max_body_bytes: int = Field(20 * 2**20, ge=1024)
    # Decoded pictures past this many pixels are refused from their header (the decoder's own default).
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_batch_images: int = Field(16, ge=1)
    # Accepted API keys; empty means open. Also read from $FACEGRAPH_API_KEYS (comma-separated).
    api_keys: list[str] = []
    # POST /v1/analyze/video: the body limit, the longest clip one request takes (longer ones belong to
    # `facegraph batch`), and the sampling defaults (frames per second of video, sampled frames at most).
    # Frames are held to max_pixels, from the stream's header.
    max_video_bytes: int = Field(200 * 2**20, ge=1024)
    max_video_s: float = Field(600.0, gt=0)
    video_fps: float = Field(2.0, gt=0, le=60)
    max_video_frames: int = Field(1200, ge=1)

    def video_limits(self) -> VideoLimits:
        return VideoLimits(
            max_video_bytes=self.max_video_bytes, max_duration_s=self.max_video_s, max_pixels=self.max_pixels,
            fps=self.video_fps, max_frames=self.max_video_frames,
        )  # fmt: skip

    def body_limit(self, path: str) -> int:
        """The body a route takes: a clip's on the video route, a picture's (or a batch's) elsewhere."""
        return self.max_video_bytes if path == VIDEO_PATH else self.max_body_bytes


class FaissConfig(_Strict):
    """When and how a gallery replica searches approximately (IVF-Flat: inverted lists of full vectors)."""

    # Exact below this many faces in a space; IVF-Flat from here (None: always exact).
    above_faces: int | None = Field(200_000, ge=1000)
    # Inverted lists; None: 4 x sqrt(faces), a power of two (4096 at 1M).
    nlist: int | None = Field(None, ge=16)
    # Lists each query visits: recall against speed.
    nprobe: int = Field(64, ge=1)
    # Training sample per list (FAISS warns below 39).
    train_per_list: int = Field(64, ge=39)
    threads: int = Field(1, ge=1, le=64)


class PgvectorIndex(_Strict):
    """pgvector's HNSW index, used by the postgres backend for spaces of at least ``exact_below`` faces."""

    # Below this many faces of a space, search scans exactly: at 10k faces the scan (10 ms p50) cost about what
    # the graph walk did (6 ms) on the 2-core build machine; at 100k, 150 ms against 10 (README, PostgreSQL backend).
    exact_below: int = Field(10_000, ge=0)
    m: int = Field(16, ge=2, le=100)
    ef_construction: int = Field(64, ge=4, le=1000)
    # Candidates the index search keeps; raised to the candidate count when a search asks for more.
    ef_search: int = Field(200, ge=1, le=1000)
    # A search fetches top_k x this many nearest faces, then keeps each subject's best (more when short).
    faces_per_subject: int = Field(5, ge=1, le=1000)
    # The build's maintenance_work_mem: an HNSW graph that outgrows it builds many times slower (about 1 kB a face at m 16).
    build_memory_mb: int = Field(1024, ge=64)


class GalleryIndexConfig(_Strict):
    """Approximate search for large galleries, per backend: FAISS in each replica (sqlite), pgvector's HNSW (postgres)."""

    faiss: FaissConfig = FaissConfig()
    pgvector: PgvectorIndex = PgvectorIndex()


class StoreSettings(_Strict):
    """What a Gallery replica needs to open its store (the DSN stays secret in reprs and logs)."""

    backend: Literal["sqlite", "postgres"]
    database: str | None = None
    dsn: SecretStr | None = None
    index: GalleryIndexConfig = GalleryIndexConfig()


class GalleryConfig(_Strict):
    """Subjects and their embeddings (SQLite or PostgreSQL) and the deployment that searches them."""

    # ``sqlite``: one local file per node. ``postgres``: one PostgreSQL server with pgvector that
    # gallery replicas on every node share (README, PostgreSQL backend).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    # SQLite file; default ``<data dir>/gallery.sqlite3``. Every gallery replica must see the same
    # local file, so keep one replica per node holding it (see the README on scaling the gallery).
    database: str | None = None
    # postgres: a libpq connection string or URI; default ``$FACEGRAPH_GALLERY_DSN``. It may hold a
    # password: never logged, never in an error or an answer.
    dsn: SecretStr | None = None
    index: GalleryIndexConfig = GalleryIndexConfig()
    # No CPU share by default: idle until identities are used, and adding it must not push a config whose
    # model shares fill the machine past its CPUs (its replica would wait for one forever).
    deployment: DeploymentConfig = DeploymentConfig(num_cpus=0.0, batching=Batching(max_batch_size=16, batch_wait_timeout_s=0.002))
    top_k: int = Field(5, ge=1, le=100)
    # The 1:1 match threshold (verify, and the loosest identification may use); None takes the
    # recognizer's own (dlib ResNet: L2 distance 0.6).
    threshold: float | None = None
    # Identification: at most this share of searches for someone not enrolled returns a match;
    # the threshold tightens as the gallery grows (None: always ``threshold``).
    false_match_rate: float | None = Field(0.01, gt=0, lt=1)
    # Faces whose eyes are closer than this many pixels are refused at enrollment and get no
    # identity (flagged low_quality); None turns the floor off.
    min_eye_distance_px: float | None = Field(20.0, ge=0)
    max_metadata_bytes: int = Field(16384, ge=0)


class BatchJobConfig(_Strict):
    """``facegraph batch``: what the bulk job adds to the stages' own settings.

    The model stages take their actor pools from their ``deployment`` (replicas, CPU and GPU
    shares, resources, ``batching.max_batch_size`` as the rows per call); this is the reading (and,
    with ``decode_in: tasks``, decoding) before them and the parquet writing after, which run as
    plain Ray tasks.
    """

    # CPU share of each reading and writing task. Small, so they fit beside the model actors
    # on a machine whose CPUs those mostly reserve (at Ray's default of 1, a task would wait for a free CPU).
    task_num_cpus: float = Field(0.1, gt=0)
    read_batch_size: int = Field(8, ge=1, le=1024)
    # Where pictures are decoded: in the detector's actors, as the Serve detector decodes (only the
    # file's bytes travel between processes and nodes), or in the reading tasks (the pixels travel,
    # and the detector's CPU share goes to the model alone: for detectors on GPUs with little CPU).
    decode_in: Literal["detector", "tasks"] = "detector"


class FacegraphConfig(_Strict):
    """Everything the app builder needs: models, deployments, HTTP limits."""

    name: str = "facegraph"
    model_cache: str | None = None
    # The default pack (``facegraph models build``): CenterFace and dlib's ResNet. The detector was chosen
    # by `facegraph bench-detectors`, the shape for a 2-core machine by `facegraph bench` (README,
    # Detectors and Performance; measured with BlazeFace, kept for CenterFace): two single-threaded
    # detector replicas, the recognizer on most of a core; batches take what is queued without waiting.
    detector: StageConfig = Field(
        default_factory=lambda: StageConfig(
            model=ModelSpec(family="centerface", pack="centerface"),
            deployment=DeploymentConfig(num_replicas=2, num_cpus=0.5, batching=Batching(max_batch_size=4, batch_wait_timeout_s=0.0)),
        )
    )
    recognizer: StageConfig | None = Field(
        default_factory=lambda: StageConfig(
            model=ModelSpec(family="dlib-resnet", pack="dlib-resnet"),
            deployment=DeploymentConfig(num_cpus=0.75, batching=Batching(max_batch_size=16, batch_wait_timeout_s=0.0)),
        )
    )
    deepfake: StageConfig | None = None
    # Identities: enroll, identify, verify. Needs the recognizer.
    gallery: GalleryConfig | None = GalleryConfig()
    ingress: IngressConfig = IngressConfig()
    batch: BatchJobConfig = BatchJobConfig()

    @model_validator(mode="after")
    def _roles(self):
        for stage, role in (("detector", "detector"), ("recognizer", "recognizer"), ("deepfake", "classifier")):
            cfg = getattr(self, stage)
            if cfg is not None:
                try:
                    family_class(cfg.model.family, role)
                except UnknownFamilyError as exc:
                    raise ValueError(exc.message) from None
        if self.recognizer is not None:
            self._check_alignment()
        return self

    def _check_alignment(self) -> None:
        """Refuse a recognizer that aligns on landmarks the detector does not give (unless box crops are asked for)."""
        detector, recognizer = self.detector.model, self.recognizer.model
        landmarks = detector_landmarks(detector)
        wanted = family_class(recognizer.family).alignment_points
        if wanted is None:
            return
        names = f"recognizer '{recognizer.family}' ({recognizer.source}) and detector '{detector.family}' ({detector.source})"
        if landmarks is None:
            if not self.recognizer.box_crops:
                raise ValueError(
                    f"{names} do not fit: the recognizer aligns faces on landmarks ({', '.join(wanted)}) and the detector "
                    "gives none. Use a detector with landmarks, or set recognizer.box_crops: true to embed unaligned "
                    "box crops (not comparable with aligned embeddings)"
                )
            return
        try:
            alignment_points(wanted, landmarks)
        except MisfitError as exc:
            raise ValueError(f"{names} do not fit: {exc.message}") from None

    def gallery_database(self) -> Path | None:
        if self.gallery is None or self.recognizer is None:
            return None
        return Path(self.gallery.database).expanduser() if self.gallery.database else default_data_dir() / "gallery.sqlite3"

    def gallery_store(self) -> StoreSettings | None:
        """The Gallery replicas' store: the SQLite file, or the PostgreSQL DSN (config, else ``$FACEGRAPH_GALLERY_DSN``)."""
        database = self.gallery_database()
        if database is None:
            return None
        if self.gallery.backend == "sqlite":
            return StoreSettings(backend="sqlite", database=str(database.resolve()), index=self.gallery.index)
        dsn = self.gallery.dsn or (SecretStr(os.environ[ENV_GALLERY_DSN]) if os.environ.get(ENV_GALLERY_DSN) else None)
        if dsn is None:
            raise ValueError(f"gallery.backend postgres needs gallery.dsn or ${ENV_GALLERY_DSN}")
        return StoreSettings(backend="postgres", dsn=dsn, index=self.gallery.index)

    def cache_dir(self) -> Path:
        return Path(self.model_cache).expanduser() if self.model_cache else default_cache_dir()

    def api_keys(self) -> list[str]:
        env = [k.strip() for k in os.environ.get(ENV_API_KEYS, "").split(",") if k.strip()]
        return list(self.ingress.api_keys) + env


def load_serve_config(path: str | Path) -> tuple[FacegraphConfig, dict]:
    """Read a Serve config YAML: the facegraph app's ``args`` and the file's ``http_options``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    apps = data.get("applications") or []
    app = next((a for a in apps if a.get("import_path") == "facegraph.graph.app:build_app"), None)
    if app is None:
        raise ValueError(f"{path}: no application with import_path facegraph.graph.app:build_app")
    return FacegraphConfig.model_validate(app.get("args") or {}), data.get("http_options") or {}
