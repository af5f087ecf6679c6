"""The model stages, as both front ends run them: one owner for each rule about a stage's model.

A Serve replica (``deployments/``) and a Ray Data actor (``graph/batch/``) each pass in the
(GPU fraction, CPU share) Ray scheduled them with (``graph.process.assigned_resources``) and get
the same session options, the same embedding space and the same description of the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Protocol

from facegraph.models.embedding import EmbeddingSpace
from facegraph.models.registry import LoadedModel, ModelSpec, load_model

# The adapter role each stage's model plays (``models.base``).
ROLES = {"detector": "detector", "recognizer": "recognizer", "deepfake": "classifier"}
# Which model answered: the fields every answer (``models``) and every bulk row (``*_model``) carry.
MODEL_FIELDS = ("family", "source", "variant", "digest", "provider", "device")


def load_stage(spec: ModelSpec, stage: str, cache_dir: Path | None, resources: tuple[float, float] = (0.0, 1.0)) -> LoadedModel:
    """``stage``'s model on ``resources`` (GPU fraction, CPU share): a whole CPU share is one ONNX Runtime thread."""
    gpu_fraction, cpu_share = resources
    return load_model(spec, gpu_fraction=gpu_fraction, cpu_threads=max(1, round(cpu_share)), cache_dir=cache_dir, role=ROLES[stage])


def answered_by(loaded: LoadedModel) -> dict[str, Any]:
    """The model as answers and rows report it; a detector's also names its landmark rows, in order."""
    described = loaded.describe()
    model = {k: described.get(k) for k in MODEL_FIELDS}
    if "landmarks" in described:
        model["landmarks"] = described["landmarks"]
    return model


def embedding_space(loaded: LoadedModel) -> EmbeddingSpace:
    """The space a recognizer's vectors belong to: stored and searched only against vectors of the same space."""
    adapter = loaded.adapter
    return EmbeddingSpace(family=loaded.spec.family, digest=loaded.digest, variant=loaded.spec.variant, dimension=adapter.dimension, metric=adapter.metric)


class Call(Protocol):
    def remote(self, *args: Any, **kwargs: Any) -> Awaitable[Any]: ...


class Stage(Protocol):
    """How the core calls a stage: ``await stage.<method>.remote(...)``.

    A Serve ``DeploymentHandle`` is one, and so is the unit tests' in-process fake
    (``tests/unit/test_api_layer.py``); the core never learns which.
    """

    def __getattr__(self, method: str) -> Call: ...

