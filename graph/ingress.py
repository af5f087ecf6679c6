"""The ingress deployment: the handle API, over the HTTP surface of ``graph.http``.

It wires the parts and stays thin: ``graph.core.analysis`` runs detector -> (recognizer | deepfake),
``graph.core.identities`` the gallery operations, ``graph.status`` health, readiness and the models
report; ``graph.errors.raising_api_errors`` is the one boundary where a failure of any of them
becomes an ``ApiError`` with its status, for handle callers and HTTP routes alike.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from facegraph.graph.core.analysis import Analysis, Options
from facegraph.graph.core.video import VideoAnalysis, VideoOptions
from facegraph.graph.config import FacegraphConfig
from facegraph.graph.errors import ApiError, as_api_error, raising_api_errors
from facegraph.graph.http import app
from facegraph.graph.core.identities import Identities
from facegraph.graph.metrics import ingress_metrics
from facegraph.graph.status import ServeStatus, Status


def _made_here(handle: DeploymentHandle | None) -> DeploymentHandle | None:
    """The same deployment's handle, made in this replica.

    A handle carries requests the way the process that made it was started (``graph.serving``:
    gRPC in the fast mode, actor calls in the plain one). Handles bound into the app are made
    where the app is built, which is the caller's process under ``serve.run``; made here, they
    follow this replica's mode wherever the app was built.
    """
    return None if handle is None else serve.get_deployment_handle(handle.deployment_name, handle.app_name)


@serve.deployment
@serve.ingress(app)
@raising_api_errors
class Ingress:
    """Awaits the detector, then runs the recognizer and deepfake branches concurrently."""

    def __init__(
        self,
        detector: DeploymentHandle,
        recognizer: DeploymentHandle | None,
        deepfake: DeploymentHandle | None,
        config: FacegraphConfig,
        api_keys: list[str],
        deployment_names: dict[str, str],
        gallery: DeploymentHandle | None = None,
    ):
        detector, recognizer, deepfake, gallery = (_made_here(h) for h in (detector, recognizer, deepfake, gallery))
        self.config = config
        self.max_body_bytes = config.ingress.max_body_bytes
        self.max_batch_images = config.ingress.max_batch_images
        self.api_keys = list(api_keys)
        self.metrics = ingress_metrics()
        self.analysis = Analysis(detector, recognizer, deepfake, self.metrics)
        self.identities = Identities(self.analysis, gallery, config.gallery) if gallery is not None and recognizer is not None else None
        self.video = VideoAnalysis(
            self.analysis,
            lambda request: detector.options(stream=True).detect_video.remote(request),
            config.ingress.video_limits(),
            low_quality=self.identities.low_quality if self.identities is not None else None,
        )
        stages = {"detector": detector, **self.analysis.branches()}
        self.status = Status(stages, deployment_names, ServeStatus(config.name))

    def need(self, part: str) -> None:
        """Refuse a route whose model or gallery is not configured."""
        missing = {
            "recognizer": self.analysis.recognizer is None,
            "deepfake": self.analysis.deepfake is None,
            "gallery": self.identities is None,
        }[part]
        if missing:
            what = {"recognizer": "no recognizer", "deepfake": "no deepfake classifier", "gallery": "no gallery (it needs a recognizer)"}[part]
            raise ApiError(f"{what} is configured", "not_configured")

    def _gallery(self) -> Identities:
        self.need("gallery")
        return self.identities

    # ---- the handle API (HTTP routes call the same methods) -------------------------------

    async def analyze(
        self,
        image: bytes | object,
        *,
        embeddings: bool = False,
        recognize: bool = True,
        deepfake: bool = True,
        max_faces: int | None = None,
        min_score: float | None = None,
        identify: bool = False,
    ) -> dict:
        """Detect faces, then embed and classify them concurrently.

        Args:
            image: encoded bytes (JPEG, PNG, WebP, BMP, TIFF, GIF) or an (H, W, 3) RGB uint8 array.
            embeddings: include each face's embedding.
            recognize, deepfake: run these branches (when configured).
            max_faces, min_score: keep the best faces only.
            identify: add each face's best gallery match as ``identity``.

        Returns:
            The same structure as ``POST /v1/analyze``. Raises ApiError for bad input.
        """
        options = Options(embeddings, recognize, deepfake, max_faces, min_score, identify)
        search = self._gallery().best_matches if identify else None
        return await self.analysis.analyze(image, options, search)

    async def analyze_many(self, images: list[bytes], **options) -> list[dict]:
        """Several pictures concurrently: per picture its answer, or its client error as ``{"error": ...}``."""
        if not images:
            raise ApiError("multipart body needs one or more file fields named 'images'", "invalid_multipart")
        if len(images) > self.max_batch_images:
            raise ApiError(f"at most {self.max_batch_images} images per batch", "too_many_images")
        results = await asyncio.gather(*(self.analyze(image, **options) for image in images), return_exceptions=True)
        out = []
        for result in results:
            if isinstance(result, BaseException):
                error = as_api_error(result)
                if error.status >= 500:  # the service failed, not this picture: fail the request
                    raise error
                out.append(error.to_json())
            else:
                out.append(result)
        return out

    async def analyze_video(
        self,
        video: bytes,
        *,
        fps: float | None = None,
        max_frames: int | None = None,
        identify: bool = False,
        deepfake: bool = True,
        embeddings: bool = False,
        min_score: float | None = None,
    ) -> dict:
        """Follow each person through a clip: tracks with their faces, best face, identity and deepfake score.

        Args:
            video: the clip's bytes (MP4/QuickTime or Matroska/WebM).
            fps: frames sampled per second of video (default ``ingress.video_fps``).
            max_frames: sample at most this many frames (default ``ingress.max_video_frames``).
            identify: name each track from the gallery (the identify route's decision rule).
            deepfake: score each face and summarise each track (when a classifier is configured).
            embeddings: include each track's mean embedding.
            min_score: drop faces scored below this.

        Returns:
            The same structure as ``POST /v1/analyze/video``. Raises ApiError for a bad or over-long clip.
        """
        options = VideoOptions(fps, max_frames, identify, deepfake, embeddings, min_score)
        return await self.video.analyze(video, options, self._gallery().best_of if identify else None)

    async def probe_video(self, video: bytes) -> dict:
        """A clip's headers (codec, size, frame rate, duration), refused as ``analyze_video`` would refuse them."""
        return (await self.video.probe(video)).to_json()

    async def video_stream(self, video: bytes, **options) -> AsyncIterator[dict]:
        """``analyze_video`` as it goes, for the NDJSON route: the clip is probed here, so a bad one is refused
        (with its status) before the stream starts; the stream is a progress event per batch of frames, then
        the answer, and a failure while it decodes is its last event."""
        info = await self.video.probe(video)
        search = self._gallery().best_of if options.get("identify") else None
        return self._events(video, info, VideoOptions(**options), search)

    async def _events(self, video: bytes, info, options: VideoOptions, search) -> AsyncIterator[dict]:
        try:
            async for event in self.video.events(video, options, search, info):
                yield event
        except Exception as exc:
            yield as_api_error(exc).to_json()

    def body_limit(self, path: str) -> int:
        return self.config.ingress.body_limit(path)

    async def describe_models(self) -> dict:
        """Per model: family, file, variant, provider, fallbacks, GPU share; batching per replica and merged."""
        return await self.status.models()

    async def create_subject(self, name: str, metadata: dict | None = None) -> dict:
        """A new subject with no faces yet."""
        return await self._gallery().create_subject(name, metadata or {})

    async def list_subjects(self, limit: int = 100, offset: int = 0) -> dict:
        return await self._gallery().list_subjects(limit, offset)

    async def get_subject(self, subject_id: str) -> dict:
        return await self._gallery().get_subject(subject_id)

    async def delete_subject(self, subject_id: str) -> dict:
        """Erase a subject and all its embeddings for good."""
        return await self._gallery().delete_subject(subject_id)

    async def enroll(self, subject_id: str, image, face_index: int | None = None, max_faces=None, min_score=None) -> dict:
        """Add one face of a picture to a subject; refuses no face, or several without ``face_index``."""
        return await self._gallery().enroll(subject_id, image, face_index, max_faces, min_score)

    async def identify(self, image, top_k: int | None = None, max_faces=None, min_score=None) -> dict:
        """Every face of a picture with its top-k subjects, closest first, and a match decision."""
        return await self._gallery().identify(image, top_k, max_faces, min_score)

    async def verify(self, image_a, image_b=None, *, subject_id: str | None = None, face_a: int | None = None, face_b: int | None = None) -> dict:
        """Whether two pictures (or a picture and a subject) show the same person, with the score."""
        return await self._gallery().verify(image_a, image_b, subject_id=subject_id, face_a=face_a, face_b=face_b)

    async def gallery_stats(self) -> dict:
        """Subjects, faces searchable with the current recognizer and faces made by others."""
        return await self._gallery().stats()
