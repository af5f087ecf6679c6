"""The identity operations over handles: subjects, enroll, identify, verify, gallery stats.

A vector is always stored and searched under the embedding space of the recognizer replica
that computed it (it comes back with the vectors), never under a space remembered from earlier:
during a rolling update from one recognizer to another, no face lands in the other's space.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from facegraph.graph.core.wire import Embeddings, SearchAnswer, SearchRequest
from facegraph.graph.core.analysis import Analysis
from facegraph.graph.config import GalleryConfig
from facegraph.graph.identity.store import MAX_OFFSET, MAX_PAGE
from facegraph.models.embedding import Decision, Match, compare, is_match
from facegraph.models.errors import FacegraphError


def below_eye_floor(eye_distance: float | None, floor: float | None) -> bool:
    """The eye-distance floor (``gallery.min_eye_distance_px``): too small a face to claim or enroll an identity.

    A face without eye landmarks is not judged. The service (identify, enroll) and the bulk job
    (``--enroll-by-folder``) both ask this.
    """
    return floor is not None and eye_distance is not None and eye_distance < floor


def one_face(faces: tuple, index: int | None, which: str = "the picture") -> int:
    """The face to use: the only one, or the one named by ``index``; refuses otherwise."""
    if index is not None:
        if index >= len(faces):
            raise FacegraphError(f"{which} has {len(faces)} face(s); face index {index} does not exist", "face_not_found")
        return index
    if not faces:
        raise FacegraphError(f"no face was found in {which}", "no_face")
    if len(faces) > 1:
        raise FacegraphError(f"{which} holds {len(faces)} faces; say which with a face index (0 is the best scored)", "several_faces")
    return 0


class Identities:
    """Gallery operations; ``analysis`` detects and embeds, ``gallery`` is the Gallery deployment's handle."""

    def __init__(self, analysis: Analysis, gallery, config: GalleryConfig):
        self.analysis, self.gallery, self.config = analysis, gallery, config

    def threshold(self, embedded: Embeddings) -> float:
        """The configured match threshold, else the one of the recognizer that made the vectors."""
        return embedded.match_threshold if self.config.threshold is None else float(self.config.threshold)

    def decision(self, embedded: Embeddings) -> dict:
        return {"metric": embedded.space.metric, "threshold": self.threshold(embedded), "embedding_space": embedded.space.key}

    async def search(self, embedded: Embeddings, top_k: int | None = None) -> SearchAnswer:
        """Per face its top-k subjects, with the threshold this gallery's size and impostors call for."""
        space = embedded.space
        request = SearchRequest(
            embedded.vectors, space.key, space.metric, top_k or self.config.top_k, self.threshold(embedded),
            self.config.false_match_rate, embedded.impostors,
        )
        return await self.gallery.search.remote(request)

    async def best_matches(self, embedded: Embeddings, faces) -> tuple[list[tuple[Match | None, bool]], Decision]:
        """Per face its identity (the best match, None if none or the face is too small) and low-quality flag; the decision."""
        answer = await self.search(embedded, 1)
        out = []
        for face, matches in zip(faces, answer.faces):
            low = self.low_quality(face)
            out.append((None if low or not matches or not matches[0].match else matches[0], low))
        return out, answer.decision

    async def best_of(self, embedded: Embeddings) -> tuple[list[Match | None], Decision]:
        """Per row of ``embedded``, the gallery's best match (None when the gallery is empty), and the decision used."""
        answer = await self.search(embedded, 1)
        return [matches[0] if matches else None for matches in answer.faces], answer.decision

    def low_quality(self, face) -> bool:
        return below_eye_floor(face.eye_distance, self.config.min_eye_distance_px)

    async def create_subject(self, name: str, metadata: dict) -> dict:
        size = len(json.dumps(metadata, separators=(",", ":")))
        if size > self.config.max_metadata_bytes:
            raise FacegraphError(f"metadata is {size} bytes; the limit is {self.config.max_metadata_bytes}", "metadata_too_large")
        return await self.gallery.create_subject.remote(name, metadata)

    async def list_subjects(self, limit: int = 100, offset: int = 0) -> dict:
        if not (1 <= limit <= MAX_PAGE and 0 <= offset <= MAX_OFFSET):
            raise FacegraphError(f"limit must be 1 to {MAX_PAGE} and offset 0 to {MAX_OFFSET}", "invalid_query")
        return await self.gallery.list_subjects.remote(limit, offset)

    async def get_subject(self, subject_id: str) -> dict:
        return await self.gallery.get_subject.remote(subject_id)

    async def delete_subject(self, subject_id: str) -> dict:
        erased = await self.gallery.delete_subject.remote(subject_id)
        return {"id": subject_id, "deleted": True, "faces_erased": erased}

    async def enroll(self, subject_id: str, image, face_index: int | None = None, max_faces=None, min_score=None) -> dict:
        await self.gallery.get_subject.remote(subject_id)  # refuse before spending a detection
        reply, embedded = await self.analysis.embedded_faces(image, max_faces, min_score)
        chosen = one_face(reply.faces, face_index)
        if self.low_quality(reply.faces[chosen]):
            raise FacegraphError(
                f"the face is too small to enroll: its eyes are {reply.faces[chosen].eye_distance:.1f} px apart and the floor is "
                f"{self.config.min_eye_distance_px:g} px (gallery.min_eye_distance_px); send a larger picture of it",
                "low_quality",
            )
        key = embedded.space.key
        face_id = await self.gallery.add_face.remote(subject_id, embedded.vectors[chosen], key)
        return {"subject_id": subject_id, "face_id": face_id, "face": reply.faces[chosen].to_json(), "embedding_space": key}

    async def identify(self, image, top_k: int | None = None, max_faces=None, min_score=None) -> dict:
        started = time.perf_counter()
        reply, embedded = await self.analysis.embedded_faces(image, max_faces, min_score)
        if embedded is None:  # no face: the decision is the one of the recognizer now serving
            embedded = await self.current_space()
        answer = await self.search(embedded, top_k)
        faces = []
        for face, matches in zip(reply.faces, answer.faces):
            low = self.low_quality(face)
            best = None if low else next((m for m in matches if m.match), None)
            faces.append(
                {**face.to_json(), "matches": [m.to_json() for m in matches], "identity": best.to_json() if best else None, "low_quality": low}
            )
        return {
            "width": reply.width,
            "height": reply.height,
            "faces": faces,
            **self.decision(embedded),
            "threshold": answer.decision.threshold,
            "decision": answer.decision.to_json(),
            "timings_ms": {"total": round((time.perf_counter() - started) * 1000, 2)},
        }

    async def verify(self, image_a, image_b=None, *, subject_id: str | None = None, face_a: int | None = None, face_b: int | None = None) -> dict:
        if (image_b is None) == (subject_id is None):
            raise FacegraphError("give either a second picture or a subject id", "invalid_request")
        if subject_id is not None:
            await self.gallery.get_subject.remote(subject_id)
            reply, embedded = await self.analysis.embedded_faces(image_a)
            chosen = one_face(reply.faces, face_a)
            space = embedded.space
            match = await self.gallery.compare_subject.remote(embedded.vectors[chosen], subject_id, space.key, space.metric, self.threshold(embedded))
            other = {"subject_id": subject_id, "name": match.name}
            distance, similarity = match.distance, match.similarity
        else:
            (reply, embedded), (reply_b, embedded_b) = await asyncio.gather(
                self.analysis.embedded_faces(image_a), self.analysis.embedded_faces(image_b)
            )
            chosen = one_face(reply.faces, face_a, "the first picture")
            chosen_b = one_face(reply_b.faces, face_b, "the second picture")
            if embedded.space != embedded_b.space:  # two recognizers answered during a rolling update
                raise FacegraphError("the recognizer is being replaced; retry shortly", "space_changed")
            distance, similarity = compare(embedded.vectors[chosen], embedded_b.vectors[chosen_b], embedded.space.metric)
            other = {"face": reply_b.faces[chosen_b].to_json()}
        return {
            "same": bool(is_match(distance, embedded.space.metric, self.threshold(embedded))),
            "distance": round(distance, 6),
            "similarity": round(similarity, 6),
            **self.decision(embedded),
            "a": {"face": reply.faces[chosen].to_json()},
            "b": other,
        }

    async def current_space(self) -> Embeddings:
        """The space of a recognizer replica serving now, as an empty set of embeddings."""
        info = await self.analysis.recognizer.info.remote()
        space = info["space"]
        return Embeddings(np.zeros((0, space.dimension), np.float32), space, info["match_threshold"], {}, info.get("impostors"))

    async def stats(self) -> dict:
        embedded = await self.current_space()
        stats = await self.gallery.stats.remote(embedded.space.key, embedded.space.metric)
        return {**stats, **self.decision(embedded)}
