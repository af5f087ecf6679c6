"""The API layer without Ray: orchestration and identities over fake handles, the error map, status calls."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from facegraph.graph.core.wire import Embeddings, Verdicts
from facegraph.graph.core.analysis import Analysis, Options
from facegraph.graph.config import GalleryConfig
from facegraph.graph.errors import ApiError, as_api_error
from facegraph.graph.core.identities import Identities
from facegraph.graph.status import ServeStatus
from facegraph.models.embedding import Decision, EmbeddingSpace, Match
from facegraph.models.errors import FacegraphError, ModelLoadError
from facegraph.models.pipeline import DetectReply, DetectRequest, detect_batch
from facegraph.models.types import Classification, CropSpec, Face

SPEC = CropSpec("box", (8, 8))
SPACE_A = EmbeddingSpace("arcface", "aaaaaaaaaaaaaaaa", "fp32", 4, "cosine")
SPACE_B = EmbeddingSpace("arcface", "bbbbbbbbbbbbbbbb", "fp16", 4, "cosine")


class Method:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def remote(self, *args, **kwargs):
        self.calls.append(args)

        async def run():
            return self.fn(*args, **kwargs)

        return run()


class Handle:
    """Anything with ``.method.remote(...)`` awaitable, like a DeploymentHandle."""

    def __init__(self, **methods):
        for name, fn in methods.items():
            setattr(self, name, Method(fn))


def faces(n: int) -> tuple[Face, ...]:
    return tuple(Face((i, i, i + 5.0, i + 5.0), 0.9, None) for i in range(n))


def detector(n_faces: int) -> Handle:
    def detect(request: DetectRequest) -> DetectReply:
        crops = {s: np.zeros((n_faces, 8, 8, 3), np.uint8) for s in request.crops}
        return DetectReply(width=64, height=48, faces=faces(n_faces), crops=crops, model={"family": "fake-detector"})

    return Handle(detect=detect)


def recognizer(space: list[EmbeddingSpace]) -> Handle:
    def embed(crops):
        return Embeddings(np.ones((len(crops), 4), np.float32), space[0], 0.5, {"family": space[0].family})

    return Handle(embed=embed, crop_spec=lambda: SPEC, info=lambda: {"space": space[0], "match_threshold": 0.5})


def failing(exc: Exception) -> Handle:
    def classify(crops):
        raise exc

    return Handle(classify=classify, crop_spec=lambda: SPEC)


def run(coro):
    return asyncio.run(coro)


def test_a_failing_branch_degrades_the_answer_and_the_other_branch_still_answers():
    analysis = Analysis(detector(3), recognizer([SPACE_A]), failing(RuntimeError("boom")))
    answer = run(analysis.analyze(b"jpeg", Options(embeddings=True)))
    assert answer["degraded"] == ["deepfake"]
    assert [len(f["embedding"]) for f in answer["faces"]] == [4, 4, 4]
    assert all("error" in f["deepfake"] for f in answer["faces"])
    assert answer["models"] == {"detector": {"family": "fake-detector"}, "recognizer": {"family": "arcface"}, "deepfake": None}


def test_identify_runs_on_the_embeddings_of_the_same_answer():
    seen = []

    decision = Decision(0.55, "recognizer", "because", 0.01, 6, 130)

    async def search(embedded: Embeddings, faces):
        seen.append((embedded.space, len(embedded.vectors), len(faces)))
        return [(Match("s1", "Ann", 0.1, 0.9, True), False), (None, True)], decision

    analysis = Analysis(detector(2), recognizer([SPACE_A]), None)
    answer = run(analysis.analyze(b"jpeg", Options(identify=True, recognize=False), search))
    assert seen == [(SPACE_A, 2, 2)]
    assert [f["identity"] and f["identity"]["subject_id"] for f in answer["faces"]] == ["s1", None]
    assert [f["low_quality"] for f in answer["faces"]] == [False, True]
    assert answer["identification"] == decision.to_json()


def test_no_face_runs_no_branch_and_a_detector_refusal_is_the_answer():
    rec = recognizer([SPACE_A])
    answer = run(Analysis(detector(0), rec, None).analyze(b"jpeg", Options()))
    assert answer["faces"] == [] and rec.embed.calls == []

    def refuse(request):
        from facegraph.models.pipeline import StageError

        return DetectReply(error=StageError("invalid_image", "not an image"))

    with pytest.raises(FacegraphError) as err:  # the core's refusal, which the boundary answers with its status
        run(Analysis(Handle(detect=refuse), rec, None).analyze(b"x", Options()))
    assert (err.value.code, as_api_error(err.value).status) == ("invalid_image", 400)


def test_crop_specs_are_asked_again_after_their_ttl():
    now = [0.0]
    rec = recognizer([SPACE_A])
    analysis = Analysis(detector(1), rec, None, clock=lambda: now[0])
    for _ in range(3):
        run(analysis.analyze(b"jpeg", Options()))
    assert len(rec.crop_spec.calls) == 1
    now[0] = 11.0
    run(analysis.analyze(b"jpeg", Options()))
    assert len(rec.crop_spec.calls) == 2


def test_every_face_is_stored_under_the_space_of_the_replica_that_embedded_it():
    """A rolling update from recognizer A to B during one app's life: no face lands in the other's space."""
    space = [SPACE_A]
    stored = []
    gallery = Handle(
        get_subject=lambda sid: {"id": sid},
        add_face=lambda sid, vector, key: stored.append(key) or len(stored),
    )
    identities = Identities(Analysis(detector(1), recognizer(space), None), gallery, GalleryConfig())
    first = run(identities.enroll("s", b"jpeg"))
    space[0] = SPACE_B  # the update lands between two enrolls
    second = run(identities.enroll("s", b"jpeg"))
    assert stored == [SPACE_A.key, SPACE_B.key]
    assert (first["embedding_space"], second["embedding_space"]) == (SPACE_A.key, SPACE_B.key)


def test_verify_refuses_to_compare_vectors_of_two_spaces():
    spaces = iter([SPACE_A, SPACE_B])

    def embed(crops):
        return Embeddings(np.ones((len(crops), 4), np.float32), next(spaces), 0.5, {})

    rec = Handle(embed=embed, crop_spec=lambda: SPEC)
    identities = Identities(Analysis(detector(1), rec, None), Handle(), GalleryConfig())
    with pytest.raises(FacegraphError) as err:
        run(identities.verify(b"a", b"b"))
    assert (err.value.code, as_api_error(err.value).status) == ("space_changed", 503)


def _wrapped(cause: BaseException) -> RayTaskError:
    return RayTaskError("classify", "traceback", cause)


@pytest.mark.parametrize(
    "exc,code,status",
    [
        (ApiError("no", "no_face"), "no_face", 422),
        (FacegraphError("bad bytes", "invalid_image"), "invalid_image", 400),
        (_wrapped(FacegraphError("gone", "not_found")), "not_found", 404),
        # A server-side failure wrapped in a Ray error is the service's fault, never the client's.
        (_wrapped(ModelLoadError("no model file")), "internal_error", 500),
        (_wrapped(ValueError("shapes do not match")), "internal_error", 500),
        (FacegraphError("unknown code", "something_new"), "internal_error", 500),
        (BackPressureError(num_queued_requests=3, max_queued_requests=2), "overloaded", 503),
        (KeyError("x"), "internal_error", 500),
    ],
    ids=["api", "client-code", "wrapped-client", "wrapped-load", "wrapped-bug", "unknown-code", "backpressure", "bug"],
)
def test_one_error_map(exc, code, status):
    error = as_api_error(exc)
    assert (error.code, error.status) == (code, status)
    if status == 500:
        assert error.message == "the service failed to process this request"
    assert (error.headers() or {}).get("Retry-After") == ("1" if status == 503 else None)


def test_serve_status_runs_off_the_event_loop_and_concurrent_callers_share_one_call():
    calls = []

    class App:
        deployments = {}

    class Answer:
        applications = {"facegraph": App()}

    def slow_status():
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return Answer()

    status = ServeStatus("facegraph", fetch=slow_status)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        answers = await asyncio.gather(*(status.application() for _ in range(10)))
        task.cancel()
        return answers, ticks

    answers, ticks = run(main())
    assert len(calls) == 1 and calls[0] != threading.get_ident()
    assert all(isinstance(a, App) for a in answers)
    assert ticks >= 10  # the loop kept running while the controller call was in flight


class OneBadPicture:
    """A detector model that fails on any batch holding a 7-pixel-wide picture."""

    def detect(self, images):
        if any(image.shape[1] == 7 for image in images):
            raise RuntimeError("kernel failure")
        return [list(faces(1)) for _ in images]


def test_one_bad_item_in_a_detector_batch_fails_only_itself():
    good = np.zeros((10, 10, 3), np.uint8)
    requests = [DetectRequest(good), DetectRequest(np.zeros((7, 7, 3), np.uint8)), DetectRequest(b"not an image"), DetectRequest(good)]
    replies = detect_batch(OneBadPicture(), requests, max_pixels=10_000)
    assert [len(r.faces) for r in replies] == [1, 0, 0, 1]
    assert [r.error.code if r.error else None for r in replies] == [None, "detection_failed", "invalid_image", None]
    assert as_api_error(FacegraphError(replies[1].error.message, replies[1].error.code)).status == 500


def test_verdicts_and_embeddings_carry_their_model():
    verdicts = Verdicts([Classification(0.2, "real")], {"family": "image-classifier"})
    assert verdicts.rows[0].to_json() == {"fake_probability": 0.2, "label": "real"}


def test_health_asks_the_models_every_time():
    from facegraph.graph.status import Status

    alive = [True]

    def describe():
        if not alive[0]:
            raise RuntimeError("replica gone")
        return {}

    status = Status({"detector": Handle(describe=describe)}, {"detector": "Detector"}, ServeStatus("facegraph", fetch=lambda: None))
    assert run(status.health())["models_loaded"] is True
    alive[0] = False  # answered once is not loaded for good
    assert run(status.health())["models_loaded"] is False


def test_models_report_every_replica_and_merges_their_batching():
    from facegraph.graph.status import Status

    def replica(rid: str, counts: dict[str, int]) -> dict:
        items = sum(int(k) * v for k, v in counts.items())
        return {"replica_id": rid, "replica_pid": 1, "family": "blazeface", "provider": "CPUExecutionProvider",
                "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.0, "batches": sum(counts.values()), "items": items, "batch_size_counts": counts}}

    class Broadcast:
        async def results_async(self, timeout_s=None, return_exceptions=False):
            return [replica("b", {"1": 3, "2": 1}), replica("a", {"1": 1, "4": 2}), RuntimeError("a replica stopping")]

    class Replicated:
        def broadcast(self, method):
            assert method == "describe"
            return Broadcast()

    class App:
        deployments = {}

    class Answer:
        applications = {"facegraph": App()}

    report = run(Status({"detector": Replicated()}, {"detector": "Detector"}, ServeStatus("facegraph", fetch=Answer)).models())
    detector = report["detector"]
    assert detector["answered"] == 2 and [r["replica_id"] for r in detector["per_replica"]] == ["a", "b"]
    assert detector["batching"]["batch_size_counts"] == {"1": 4, "2": 1, "4": 2}
    assert (detector["batching"]["batches"], detector["batching"]["items"]) == (7, 14)
    assert report["recognizer"] == {"configured": False} and report["ingress"]["replica_pid"] > 0
