"""What each route answers, as pydantic models: ``/openapi.json`` documents every response and
FastAPI checks each answer against its model before it leaves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from facegraph.models.tracking import DeepfakeSummary


class _Open(BaseModel):
    # Answers may grow fields; clients ignore what they do not know.
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code")
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorBody


class Deepfake(BaseModel):
    fake_probability: float
    label: Literal["real", "fake"]


class BranchFailure(BaseModel):
    error: str


class MatchAnswer(BaseModel):
    subject_id: str
    name: str
    distance: float
    similarity: float
    match: bool


class ThresholdAnswer(BaseModel):
    threshold: float = Field(description="the match threshold this search used")
    rule: Literal["fixed", "recognizer", "false-match-rate"]
    reason: str
    false_match_rate: float | None
    gallery_faces: int
    impostor_pairs: int


class FaceAnswer(_Open):
    bbox: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels")
    score: float
    landmarks: list[list[float]] | None = Field(description="rows named by models.detector.landmarks")
    embedding: list[float] | BranchFailure | None = None
    deepfake: Deepfake | BranchFailure | None = None
    identity: MatchAnswer | None = None
    low_quality: bool | None = Field(None, description="when identifying: eyes closer than gallery.min_eye_distance_px, so no identity is claimed")


class AnalyzeAnswer(_Open):
    width: int
    height: int
    faces: list[FaceAnswer]
    models: dict[str, dict[str, Any] | None] = Field(description="what each replica that answered runs; null: not run")
    timings_ms: dict[str, float]
    degraded: list[str] | None = Field(None, description="branches that failed; their fields carry an error")
    identification: ThresholdAnswer | None = Field(None, description="with identify: the threshold the search used and why")


class TrackFace(_Open):
    frame: int = Field(description="the sampled frame's ordinal (0, 1, ...)")
    time_s: float
    bbox: list[float] = Field(min_length=4, max_length=4)
    score: float
    landmarks: list[list[float]] | None
    quality: float = Field(description="score x size x frontalness: how good a view of the face this is")
    fake_probability: float | None = None


class TrackAnswer(_Open):
    track_id: int
    start_s: float
    end_s: float
    frames: list[int] = Field(description="the sampled frames it appears in")
    faces: list[TrackFace]
    best: TrackFace
    deepfake: DeepfakeSummary | None = None
    identity: MatchAnswer | None = Field(None, description="with identify: the subject most of its best embeddings match, else null")
    votes: int | None = None
    probes: int | None = None
    low_quality: bool | None = Field(None, description="with identify: no face of the track clears gallery.min_eye_distance_px")
    embedding: list[float] | None = Field(None, description="with embeddings: the mean of its embeddings")


class VideoAnswer(_Open):
    video: dict[str, Any] = Field(description="what the clip's headers say: container, codec, size, fps, duration")
    sampling: dict[str, Any]
    tracks: list[TrackAnswer]
    models: dict[str, dict[str, Any] | None]
    timings_ms: dict[str, float]
    identification: ThresholdAnswer | None = None
    degraded: list[str] | None = None


class BatchAnswer(BaseModel):
    results: list[AnalyzeAnswer | ErrorAnswer]


class SubjectAnswer(_Open):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: float
    faces: int
    faces_by_space: dict[str, int]


class SubjectList(BaseModel):
    total: int
    limit: int
    offset: int
    subjects: list[SubjectAnswer]


class Deleted(BaseModel):
    id: str
    deleted: bool
    faces_erased: int


class Enrolled(BaseModel):
    subject_id: str
    face_id: int
    face: FaceAnswer
    embedding_space: str


class Decision(_Open):
    metric: Literal["euclidean", "cosine"]
    threshold: float
    embedding_space: str


class IdentifiedFace(FaceAnswer):
    matches: list[MatchAnswer]


class IdentifyAnswer(Decision):
    decision: ThresholdAnswer
    width: int
    height: int
    faces: list[IdentifiedFace]
    timings_ms: dict[str, float]


class VerifyAnswer(Decision):
    same: bool
    distance: float
    similarity: float
    a: dict[str, Any]
    b: dict[str, Any]


class GalleryAnswer(Decision):
    subjects: int
    faces: int
    faces_other_spaces: int
    search: str = Field(description="exact, or approximate (FAISS IVF-Flat) above gallery.index.faiss.above_faces")


class GpuAnswer(BaseModel):
    index: int
    name: str
    memory_used_mb: float
    memory_total_mb: float
    memory_percent: float


class HealthAnswer(BaseModel):
    status: Literal["ok"]
    models_loaded: bool
    gpu_available: bool
    gpus: list[GpuAnswer]


class ReadyAnswer(BaseModel):
    ready: bool
    deployments: dict[str, str]


class ModelsAnswer(_Open):
    detector: dict[str, Any]
    recognizer: dict[str, Any]
    deepfake: dict[str, Any]
    ingress: dict[str, Any]


# Error answers every route documents besides its own.
ERRORS = {status: {"model": ErrorAnswer} for status in (400, 401, 404, 409, 413, 415, 422, 500, 503)}
