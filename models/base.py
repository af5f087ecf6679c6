"""Adapter base classes: one role each (detector, recognizer, classifier).

An adapter wraps already-built sessions (anything with ONNX Runtime's
``get_inputs``/``get_outputs``/``run``), so tests can hand it a fake. Every
adapter works on a *list* of inputs and makes one session call per batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from facegraph.models.errors import SignatureError
from facegraph.models.types import Classification, CropSpec, Face


class SessionLike(Protocol):
    def get_inputs(self) -> list: ...

    def get_outputs(self) -> list: ...

    def run(self, output_names, input_feed) -> list: ...


class FamilySettings(BaseModel):
    """Family-specific knobs; unknown keys are refused so typos surface at load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TensorSig:
    """Expected tensor: rank and, where it matters, fixed dims (None = any)."""

    rank: int
    dims: tuple[int | str | None, ...] = ()
    name: str = ""

    def matches(self, node) -> bool:
        shape = list(node.shape or [])
        if len(shape) != self.rank:
            return False
        for want, got in zip(self.dims, shape):
            if isinstance(want, int) and isinstance(got, int) and want != got:
                return False
        return True

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in (self.dims or (None,) * self.rank))
        return f"{self.name or 'tensor'}[{dims}]"


def describe_node(node) -> str:
    dims = ", ".join(str(d) if d is not None else "?" for d in (node.shape or []))
    return f"{node.name}[{dims}] {node.type}"


def check_signature(family: str, session: SessionLike, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig] | None) -> None:
    """Raise SignatureError naming expected vs found unless the session fits.

    ``outputs=None`` skips the output check (families that accept several layouts
    check them themselves).
    """
    found_in, found_out = session.get_inputs(), session.get_outputs()
    ok = len(found_in) == len(inputs) and all(sig.matches(n) for sig, n in zip(inputs, found_in))
    if outputs is not None:
        ok = ok and len(found_out) == len(outputs) and all(sig.matches(n) for sig, n in zip(outputs, found_out))
    if not ok:
        raise signature_error(family, inputs, outputs, session)


def signature_error(family: str, inputs, outputs, session: SessionLike, note: str = "") -> SignatureError:
    expected_out = "any" if outputs is None else ", ".join(s.describe() for s in outputs)
    return SignatureError(
        f"model does not fit family '{family}'{': ' + note if note else ''}. "
        f"Expected inputs: {', '.join(s.describe() for s in inputs)}; outputs: {expected_out}. "
        f"Found inputs: {', '.join(describe_node(n) for n in session.get_inputs())}; "
        f"outputs: {', '.join(describe_node(n) for n in session.get_outputs())}"
    )


def fixed_batch(session: SessionLike) -> bool:
    """True when the model's first input has a fixed batch dimension of 1."""
    first = session.get_inputs()[0].shape
    return bool(first) and first[0] == 1


def run_batched(session: SessionLike, input_name: str, batch: np.ndarray, fixed_one: bool) -> list[np.ndarray]:
    """One session call for the batch; a model exported with batch 1 is called per item."""
    if not fixed_one or len(batch) == 1:
        return session.run(None, {input_name: batch})
    parts = [session.run(None, {input_name: batch[i : i + 1]}) for i in range(len(batch))]
    return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(parts[0]))]


def cpu_call_size(session: SessionLike) -> int | None:
    """Items per call on ONNX Runtime's CPU provider: as many as it has threads (None: the whole batch, other providers).

    Measured (2-core build machine): BlazeFace, ten 192 px windows, took 80 ms in one call
    of 10 on 1 thread against 48 ms as 10 calls of 1, and 39 ms on 2 threads as 5 calls of
    2; larger batches spill out of the CPU's caches. CenterFace at 480 and 640 px on 1 thread
    was 4 to 16 % slower per picture in batches of 2 or 4 than alone (2-core AMD EPYC, 2026-12-06).
    """
    try:
        if session.get_providers()[0] != "CPUExecutionProvider":
            return None
        return max(1, int(session.get_session_options().intra_op_num_threads))
    except AttributeError:  # a fake session in tests
        return None


def run_in_calls(session: SessionLike, input_name: str, batch: np.ndarray, fixed_one: bool, call_size: int | None) -> list[np.ndarray]:
    """The batch in session calls of ``call_size`` items (None: one call), outputs concatenated."""
    if call_size is None or len(batch) <= call_size:
        return run_batched(session, input_name, batch, fixed_one)
    parts = [run_batched(session, input_name, batch[i : i + call_size], fixed_one) for i in range(0, len(batch), call_size)]
    return [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]


class Adapter(ABC):
    """Common shape: a family name, settings, and the files it needs."""

    family: ClassVar[str]
    role: ClassVar[str]
    Settings: ClassVar[type[FamilySettings]] = FamilySettings
    # Names of the ONNX files a family loads; most need one.
    files: ClassVar[tuple[str, ...]] = ("model",)

    def __init__(self, sessions: dict[str, SessionLike], settings: FamilySettings | None = None, **resources: Any):
        self.sessions = sessions
        self.settings = settings if settings is not None else self.Settings()
        self.resources = resources

    @property
    def session(self) -> SessionLike:
        return self.sessions[self.files[0]]

    def describe(self) -> dict:
        """Static facts for /v1/models: input shapes per session."""
        return {
            "family": self.family,
            "role": self.role,
            "inputs": {
                name: [describe_node(n) for n in sess.get_inputs()] for name, sess in self.sessions.items()
            },
            "settings": self.settings.model_dump(),
        }


class Detector(Adapter):
    role = "detector"
    # The landmarks the family's faces carry (names from models.types.LANDMARK_NAMES), None if none.
    landmarks: ClassVar[tuple[str, ...] | None] = None

    def describe(self) -> dict:
        return {**super().describe(), "landmarks": list(self.landmarks) if self.landmarks else None}

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per RGB uint8 (H, W, 3) image, in original pixels, best first."""


class Recognizer(Adapter):
    role = "recognizer"
    metric: ClassVar[str] = "cosine"  # or "euclidean"
    # The landmarks its alignment template names (None: box crops); checked against the detector's at config time.
    alignment_points: ClassVar[tuple[str, ...] | None] = None

    @property
    @abstractmethod
    def crop_spec(self) -> CropSpec:
        """How the detector must cut this model's input."""

    @property
    @abstractmethod
    def dimension(self) -> int: ...

    @property
    @abstractmethod
    def match_threshold(self) -> float:
        """Cosine similarity above (or L2 distance below) which two faces match."""

    @abstractmethod
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings for RGB uint8 crops cut by ``crop_spec``."""

    @property
    def impostors(self):
        """Distances between different people measured with this model (``models.embedding.ImpostorModel``), or None."""
        return None


class Classifier(Adapter):
    role = "classifier"

    @property
    @abstractmethod
    def crop_spec(self) -> CropSpec: ...

    @abstractmethod
    def classify(self, crops: Sequence[np.ndarray]) -> list[Classification]:
        """One verdict per RGB uint8 crop cut by ``crop_spec``."""
